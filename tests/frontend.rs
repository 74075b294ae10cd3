//! `rbuild debug parse`: the Dockerfile frontend through the real binary.

use crate::util::{show, Rbuild, TestDir};

#[test]
fn debug_parse_prints_the_buildkit_dump() {
    let dir = TestDir::new("debug-parse");
    let file = dir.write(
        "Dockerfile",
        "# escape=`\nFROM alpine AS base\nCOPY --chown=1:1 --link a `\n  b /dst/\nRUN <<EOF\necho hi\nEOF\nCMD [\"sh\"]\n",
    );
    let out = Rbuild::new().ok(&["debug", "parse", file.to_str().unwrap()]);
    assert_eq!(
        out,
        "(from \"alpine\" \"AS\" \"base\")\n\
         (copy [\"--chown=1:1\" \"--link\"] \"a\" \"b\" \"/dst/\")\n\
         (run \"<<EOF\")\n\
         (cmd \"sh\")\n"
    );
}

#[test]
fn debug_parse_reports_unknown_instruction_with_location() {
    let dir = TestDir::new("debug-parse-err");
    let file = dir.write("Dockerfile", "FROM alpine\n\nRUNN echo hi\n");
    let out = Rbuild::new().run(&["debug", "parse", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "{}:3: unknown instruction \"RUNN\" (did you mean \"RUN\"?)",
        file.display()
    );
    assert!(stderr.contains(&expected), "{}", show(&out));
    assert!(
        stderr.contains("RUNN echo hi"),
        "the line is shown: {}",
        show(&out)
    );
}

#[test]
fn debug_parse_missing_file_fails() {
    let dir = TestDir::new("debug-parse-missing");
    let missing = dir.path().join("nope");
    let out = Rbuild::new().run(&["debug", "parse", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nope"),
        "{}",
        show(&out)
    );
}
