//! Fuzzes shell-word expansion in every lexer mode; none may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rbuild_builder::frontend::{heredocs_from_line, parse_heredoc, Lexer};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = vec![
        ("A".to_string(), "a b*c".to_string()),
        ("E".to_string(), String::new()),
        ("P".to_string(), "/usr/bin:/bin".to_string()),
    ];
    for escape in ['\\', '`'] {
        let base = Lexer::new(escape);
        for lex in [
            base,
            base.raw_quotes(true),
            base.raw_escapes(true).raw_quotes(true).skip_unset_env(true),
            base.skip_process_quotes(true),
        ] {
            let _ = lex.expand(text, &env);
        }
    }
    let _ = parse_heredoc(text);
    let _ = heredocs_from_line(text);
});
