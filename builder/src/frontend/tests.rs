//! Tests of the frontend as a whole: error messages, typed instructions, the step graph.

use super::instructions::{Instruction, MountKind, Source};
use super::{parse, Base, ErrorKind, ParseError, StepGraph};

fn graph(text: &str, args: &[(&str, &str)], target: Option<&str>) -> Result<StepGraph, ParseError> {
    let doc = parse("Dockerfile", text.as_bytes())?;
    let args: Vec<(String, String)> = args
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    StepGraph::new(&doc, &args, target)
}

fn error(text: &str) -> ParseError {
    match graph(text, &[], None) {
        Ok(g) => panic!("expected an error, got {g:?}"),
        Err(e) => e,
    }
}

fn first_line(e: &ParseError) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

#[test]
fn unknown_instruction_suggests_and_locates() {
    let e = error("FROM alpine\n\n  RUNN echo hi\n");
    assert_eq!(
        first_line(&e),
        "Dockerfile:3: unknown instruction \"RUNN\" (did you mean \"RUN\"?)"
    );
    assert_eq!((e.line, e.column), (3, 3));
    assert!(
        e.to_string()
            .contains("    3 |   RUNN echo hi\n      |   ^"),
        "{e}"
    );
    let far = error("FROM alpine\nFROBNICATE x\n");
    assert_eq!(
        first_line(&far),
        "Dockerfile:2: unknown instruction \"FROBNICATE\""
    );
}

#[test]
fn parse_errors_name_the_line() {
    assert_eq!(
        first_line(&error("FROM a\nENV PATH\n")),
        "Dockerfile:2: ENV must have two arguments"
    );
    assert_eq!(
        first_line(&error("FROM a\nRUN <<EOF\necho\n")),
        "Dockerfile:2: unterminated heredoc \"EOF\""
    );
    assert_eq!(
        first_line(&error("# comment\n\n")),
        "Dockerfile:2: file with no instructions"
    );
    assert_eq!(
        first_line(&error("FROM a\nCMD [\"a\", [\"b\"]]\n")),
        "Dockerfile:2: CMD: not a JSON array of strings"
    );
    assert_eq!(
        first_line(&error("RUN x\nFROM a\n")),
        "Dockerfile:1: RUN cannot come before the first FROM"
    );
    assert_eq!(
        first_line(&error("# escape=x\nFROM a\n")),
        "Dockerfile:1: invalid escape token 'x' does not match ` or \\"
    );
}

#[test]
fn flag_errors() {
    let e = error("FROM a\nCOPY --frm=x a b\n");
    assert!(matches!(*e.kind, ErrorKind::UnknownFlag { .. }), "{e}");
    assert_eq!(first_line(&e), "Dockerfile:2: unknown flag: --frm for COPY");
    let e = error("FROM a\nCOPY --from a b\n");
    assert_eq!(first_line(&e), "Dockerfile:2: flag --from: missing a value");
    let e = error("FROM a\nCOPY --link=maybe a b\n");
    assert_eq!(
        first_line(&e),
        "Dockerfile:2: flag --link: expects true or false"
    );
    let e = error("FROM a\nWORKDIR --x /a\n");
    assert!(matches!(*e.kind, ErrorKind::UnknownFlag { .. }), "{e}");
    let e = error("FROM a\nCOPY onlyone\n");
    assert!(matches!(*e.kind, ErrorKind::Arguments { .. }), "{e}");
}

#[test]
fn typed_copy_with_flags_and_heredoc() {
    let g = graph(
        "FROM a\nCOPY --chown=1:2 --chmod=644 --link <<EOF x /dst/\n\thello\nEOF\n",
        &[],
        None,
    )
    .unwrap();
    let step = &g.stages[0].steps[0];
    assert_eq!((step.location.start_line, step.location.end_line), (2, 4));
    let Instruction::Copy(c) = &step.instruction else {
        panic!("{step:?}");
    };
    assert_eq!(c.chown.as_deref(), Some("1:2"));
    assert_eq!(c.chmod.as_deref(), Some("644"));
    assert!(c.link);
    assert_eq!(c.dest, "/dst/");
    let Source::Inline(f) = &c.sources[0] else {
        panic!("{c:?}");
    };
    assert_eq!(
        (f.name.as_str(), f.data.as_str(), f.expand),
        ("EOF", "\thello\n", true)
    );
    assert_eq!(c.sources[1], Source::Path("x".into()));
}

#[test]
fn run_mounts_network_and_stage_edges() {
    let g = graph(
        "FROM alpine AS build\nRUN true\nFROM scratch\nRUN --network=none --mount=type=cache,target=/c --mount=from=build,target=/b make\n",
        &[],
        None,
    )
    .unwrap();
    let last = g.stages.last().unwrap();
    assert_eq!(last.deps, [0]);
    let Instruction::Run(run) = &last.steps[0].instruction else {
        panic!();
    };
    assert_eq!(run.mounts[0].kind, MountKind::Cache);
    assert_eq!(run.network, super::instructions::Network::None);
    assert_eq!(last.steps[0].mount_from, [None, Some(Base::Stage(0))]);
    assert_eq!(g.stages.len(), 2);
}

#[test]
fn stages_base_and_target_pruning() {
    let text = "FROM alpine AS a\nRUN a\nFROM a AS b\nCOPY --from=0 /x /y\nCOPY --from=busybox /bin/sh /sh\nFROM scratch AS c\nCOPY --from=a /x /x\nFROM debian AS unused\n";
    let g = graph(text, &[], Some("b")).unwrap();
    let idx: Vec<usize> = g.stages.iter().map(|s| s.index).collect();
    assert_eq!(idx, [0, 1]);
    assert_eq!(g.target, 1);
    assert_eq!(g.stages[1].base, Base::Stage(0));
    assert_eq!(g.stages[1].steps[0].copy_from, Some(Base::Stage(0)));
    assert_eq!(
        g.stages[1].steps[1].copy_from,
        Some(Base::Image("busybox".into()))
    );
    let g = graph(text, &[], Some("C")).unwrap();
    let idx: Vec<usize> = g.stages.iter().map(|s| s.index).collect();
    assert_eq!(idx, [0, 2]);
    assert_eq!(g.stages[1].base, Base::Scratch);
    let g = graph(text, &[], None).unwrap();
    let idx: Vec<usize> = g.stages.iter().map(|s| s.index).collect();
    assert_eq!(idx, [3], "the default target is the last stage, alone");
    let e = graph(text, &[], Some("nope")).unwrap_err();
    assert!(matches!(*e.kind, ErrorKind::UnknownTarget(_)), "{e}");
}

#[test]
fn forward_and_duplicate_stages_are_rejected() {
    let e = error("FROM alpine AS a\nCOPY --from=b /x /y\nFROM alpine AS b\n");
    assert!(matches!(*e.kind, ErrorKind::ForwardStage { .. }), "{e}");
    assert_eq!(e.line, 2);
    let e = error("FROM alpine AS a\nCOPY --from=1 /x /y\nFROM alpine\n");
    assert!(matches!(*e.kind, ErrorKind::ForwardStage { .. }), "{e}");
    let e = error("FROM b AS a\nFROM alpine AS b\n");
    assert!(matches!(*e.kind, ErrorKind::ForwardStage { .. }), "{e}");
    let e = error("FROM a AS a\n");
    assert!(matches!(*e.kind, ErrorKind::ForwardStage { .. }), "{e}");
    let e = error("FROM alpine AS a\nFROM alpine AS A\n");
    assert!(matches!(*e.kind, ErrorKind::DuplicateStage(_)), "{e}");
    let e = error("FROM alpine AS 1x\n");
    assert!(matches!(*e.kind, ErrorKind::InvalidStageName(_)), "{e}");
}

#[test]
fn global_args_scope_and_build_args() {
    let text = "ARG V=3.18\nARG UNSET\nFROM alpine:$V\nRUN a\nARG V\nARG W=${V}-x\nRUN b\n";
    let g = graph(text, &[], None).unwrap();
    assert_eq!(g.stages[0].base, Base::Image("alpine:3.18".into()));
    let steps = &g.stages[0].steps;
    assert!(
        steps[0].args.is_empty(),
        "global args are not visible until re-declared"
    );
    assert_eq!(
        steps[3].args,
        [
            ("V".to_string(), "3.18".to_string()),
            ("W".into(), "3.18-x".into())
        ]
    );
    let g = graph(
        text,
        &[("V", "3.19"), ("W", "w"), ("FOO", "1"), ("HTTP_PROXY", "p")],
        None,
    )
    .unwrap();
    assert_eq!(g.stages[0].base, Base::Image("alpine:3.19".into()));
    assert_eq!(
        g.stages[0].steps[3].args,
        [
            ("V".to_string(), "3.19".to_string()),
            ("W".into(), "w".into())
        ]
    );
    assert_eq!(g.unused_build_args, ["FOO"]);
}

#[test]
fn unused_build_args_only_count_built_stages() {
    let text = "FROM alpine AS a\nARG ONLY_A\nFROM alpine AS b\nARG ONLY_B\n";
    let g = graph(text, &[("ONLY_A", "1"), ("ONLY_B", "2")], Some("b")).unwrap();
    assert_eq!(g.unused_build_args, ["ONLY_A"]);
}

#[test]
fn platform_args() {
    let text = "FROM --platform=$BUILDPLATFORM alpine\nARG TARGETARCH\nARG TARGETPLATFORM\nRUN x\n";
    let g = graph(text, &[], None).unwrap();
    let host = rbuild_store::Platform::host();
    assert_eq!(g.stages[0].platform, Some(host.to_string()));
    assert_eq!(
        g.stages[0].steps[2].args,
        [
            ("TARGETARCH".to_string(), host.architecture.clone()),
            ("TARGETPLATFORM".to_string(), host.to_string())
        ]
    );
    if cfg!(target_arch = "x86_64") {
        assert_eq!(host.to_string(), "linux/amd64");
    }
}

#[test]
fn scope_prefers_env_over_args() {
    let env = [("A".to_string(), "env".to_string())];
    let args = [
        ("A".to_string(), "arg".to_string()),
        ("B".to_string(), "b".to_string()),
    ];
    let scope = super::Scope {
        env: &env,
        args: &args,
    };
    let lex = super::Lexer::new('\\');
    assert_eq!(lex.expand_word("$A-$B", &scope).unwrap(), "env-b");
}

#[test]
fn env_pairs_expand_against_the_environment_before_the_instruction() {
    // docker: `ENV A=y B=$A C=${A}z` with A=x before gives B=x, C=xz (not y, yz).
    let env = [("A".to_string(), "x".to_string())];
    let args = [("D".to_string(), "arg".to_string())];
    let scope = super::Scope {
        env: &env,
        args: &args,
    };
    let kv = |k: &str, v: &str| super::KeyValue {
        key: k.to_string(),
        value: v.to_string(),
    };
    let lex = super::Lexer::new('\\');
    let pairs = [kv("A", "y"), kv("B", "$A"), kv("C", "${A}z"), kv("E", "$D")];
    let got = super::expand_env_pairs(&lex, &pairs, &scope).unwrap();
    let want: Vec<(String, String)> = [("A", "y"), ("B", "x"), ("C", "xz"), ("E", "arg")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(got, want);
    // Unset before the instruction: empty, even though the same line sets it.
    let empty: [(String, String); 0] = [];
    let scope = super::Scope {
        env: &empty,
        args: &empty,
    };
    let got = super::expand_env_pairs(&lex, &[kv("N", "1"), kv("M", "[$N]")], &scope).unwrap();
    assert_eq!(got[1].1, "[]");
}

#[test]
fn every_instruction_types() {
    let text = "FROM alpine\nMAINTAINER me\nEXPOSE 80/tcp 443\nENV A=1 B=\"2 3\"\nENV C 4 5\nLABEL k=v\nVOLUME [\"/a\", \"/b\"]\nUSER 1000:1000\nWORKDIR /w\nARG X Y=z\nONBUILD RUN echo\nSTOPSIGNAL SIGTERM\nHEALTHCHECK --interval=5s --retries=3 CMD curl -f x\nHEALTHCHECK NONE\nSHELL [\"/bin/bash\", \"-c\"]\nADD --checksum=sha256:00 --keep-git-dir https://x/y.tgz /\nCMD [\"a\"]\nENTRYPOINT b c\n";
    let g = graph(text, &[], None).unwrap();
    let names: Vec<String> = g.stages[0]
        .steps
        .iter()
        .map(|s| {
            format!("{:?}", s.instruction)
                .split(['(', ' '])
                .next()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(
        names,
        [
            "Maintainer",
            "Expose",
            "Env",
            "Env",
            "Label",
            "Volume",
            "User",
            "Workdir",
            "Arg",
            "Onbuild",
            "StopSignal",
            "Healthcheck",
            "Healthcheck",
            "Shell",
            "Add",
            "Cmd",
            "Entrypoint"
        ]
    );
    let Instruction::Env(kv) = &g.stages[0].steps[3].instruction else {
        panic!();
    };
    assert_eq!((kv[0].key.as_str(), kv[0].value.as_str()), ("C", "4 5"));
    let Instruction::Onbuild(t) = &g.stages[0].steps[9].instruction else {
        panic!();
    };
    assert_eq!(t, "RUN echo");
    let e = error("FROM a\nONBUILD FROM b\n");
    assert!(matches!(*e.kind, ErrorKind::InvalidValue { .. }), "{e}");
    let e = error("FROM a\nSHELL sh -c\n");
    assert!(matches!(*e.kind, ErrorKind::Arguments { .. }), "{e}");
}

#[test]
fn expansion_errors_keep_their_cause() {
    let e = error("ARG V\nFROM alpine:${V:?unset}\n");
    assert_eq!(first_line(&e), "Dockerfile:2: cannot expand");
    let cause = std::error::Error::source(&e).map(|c| c.to_string());
    assert_eq!(
        cause.as_deref(),
        Some("failed to process \"alpine:${V:?unset}\": V: unset")
    );
}

fn dump_of(text: &str) -> String {
    super::dump(&parse("Dockerfile", text.as_bytes()).unwrap())
}

#[test]
fn dump_flags_and_double_dash() {
    let text = "FROM scratch\nCOPY --user=me --doit=true foo /tmp/\nCOPY --doit=true -- foo /tmp/\nCOPY -- foo /tmp/\nCMD --doit [ \"a\", \"b\" ]\nCMD --doit -- [ ]\nADD --chown=\"a b\" x y\n";
    assert_eq!(
        dump_of(text),
        "(from \"scratch\")\n(copy [\"--user=me\" \"--doit=true\"] \"foo\" \"/tmp/\")\n(copy [\"--doit=true\"] \"foo\" \"/tmp/\")\n(copy \"foo\" \"/tmp/\")\n(cmd [\"--doit\"] \"a\" \"b\")\n(cmd [\"--doit\"])\n(add [\"--chown=a b\"] \"x\" \"y\")\n"
    );
}

#[test]
fn dump_edge_lines() {
    assert_eq!(
        dump_of("\u{feff}FROM a\n\nRUN something \\"),
        "(from \"a\")\n(run \"something\")\n"
    );
    assert_eq!(
        dump_of("FROM a\r\nRUN a \\\r\n# c\r\n\r\n b\r\nUNKNOWN x\nonbuild\n"),
        "(from \"a\")\n(run \"a  b\")\n(unknown \"\")\n(onbuild)\n"
    );
    assert_eq!(
        dump_of("# escape=`\nFROM a\nRUN a `\n  b \\\nCOPY [\"a\\\\b\", \"c\"] d\n"),
        "(from \"a\")\n(run \"a   b \\\\\")\n(copy \"[\\\"a\\\\\\\\b\\\",\" \"\\\"c\\\"]\" \"d\")\n"
    );
}

#[test]
fn build_contexts_replace_stages_and_images_of_their_name() {
    let text = "FROM scratch AS lib\nRUN false\n\
                FROM lib AS mid\n\
                FROM alpine\nCOPY --from=lib /a /a\nCOPY --from=mid /b /b\nCOPY --from=Tools /c /c\n";
    let doc = parse("Dockerfile", text.as_bytes()).unwrap();
    let host = rbuild_store::Platform::host();
    let names = ["lib".to_string(), "tools".to_string()];
    let g = StepGraph::with_contexts(&doc, &[], None, &host, &host, &names).unwrap();
    // The stage `lib` is not built: what named it reads the context.
    assert!(g.stage(0).is_none());
    assert_eq!(g.stage(1).unwrap().base, Base::Context("lib".into()));
    let last = g.stages.last().unwrap();
    let froms: Vec<_> = last.steps.iter().map(|s| s.copy_from.clone()).collect();
    assert_eq!(
        froms,
        [
            Some(Base::Context("lib".into())),
            Some(Base::Stage(1)),
            Some(Base::Context("tools".into())),
        ]
    );
    assert_eq!(last.deps, [1]);
    // Without contexts the same file builds `lib`.
    let plain = StepGraph::new(&doc, &[], None).unwrap();
    assert!(plain.stage(0).is_some());
}
