//! Fuzzes the Dockerfile frontend: parse, dump, type and resolve stages; none may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rbuild_builder::frontend::{detect_syntax, dump, parse, StepGraph};

fuzz_target!(|data: &[u8]| {
    if let Ok(doc) = parse("Dockerfile", data) {
        let _ = dump(&doc);
        let args = [("A".to_string(), "1".to_string())];
        let _ = StepGraph::new(&doc, &args, None);
        if let Some(name) = doc.children.iter().find_map(|n| n.args.get(2)) {
            let _ = StepGraph::new(&doc, &[], Some(name));
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = detect_syntax(text);
    }
});
