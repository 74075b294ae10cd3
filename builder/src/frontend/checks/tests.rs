//! One positive and one negative Dockerfile per rule.

use super::*;
use crate::frontend::parse;

fn rules_found(text: &str, config: &CheckConfig) -> Vec<&'static str> {
    let doc = parse("Dockerfile", text.as_bytes()).expect("parses");
    let ignored = |p: &str| p == "ignored.txt";
    lint(&doc, config, &ignored)
        .into_iter()
        .map(|w| w.rule)
        .collect()
}

/// (rule, a Dockerfile that breaks it, one that does not)
const CASES: &[(&str, &str, &str)] = &[
    (
        "StageNameCasing",
        "FROM scratch AS Build\n",
        "FROM scratch AS build\n",
    ),
    (
        "FromAsCasing",
        "FROM scratch as build\n",
        "FROM scratch AS build\n",
    ),
    (
        "NoEmptyContinuation",
        "FROM scratch\nLABEL a=1 \\\n\n  b=2\n",
        "FROM scratch\nLABEL a=1 \\\n  b=2\n",
    ),
    (
        "ConsistentInstructionCasing",
        "FROM scratch\nLABEL a=1\nlabel b=2\n",
        "from scratch\nlabel a=1\nlabel b=2\n",
    ),
    (
        "DuplicateStageName",
        "FROM scratch AS a\nFROM scratch AS a\n",
        "FROM scratch AS a\nFROM scratch AS b\n",
    ),
    (
        "ReservedStageName",
        "FROM scratch AS scratch\n",
        "FROM scratch AS base\n",
    ),
    (
        "JSONArgsRecommended",
        "FROM scratch\nENTRYPOINT run it\n",
        "FROM scratch\nENTRYPOINT [\"run\", \"it\"]\n",
    ),
    (
        "MaintainerDeprecated",
        "FROM scratch\nMAINTAINER me\n",
        "FROM scratch\nLABEL org.opencontainers.image.authors=me\n",
    ),
    (
        "UndefinedArgInFrom",
        "FROM busybox:${TAG}\n",
        "ARG TAG=1\nFROM busybox:${TAG}\n",
    ),
    (
        "WorkdirRelativePath",
        "FROM scratch\nWORKDIR app\n",
        "FROM scratch\nWORKDIR /app\nWORKDIR sub\n",
    ),
    (
        "UndefinedVar",
        "FROM scratch\nCOPY $SRC /\n",
        "FROM scratch\nARG SRC=a\nENV D=/d\nCOPY $SRC $D\n",
    ),
    (
        "MultipleInstructionsDisallowed",
        "FROM scratch\nCMD [\"a\"]\nCMD [\"b\"]\n",
        "FROM scratch AS a\nCMD [\"a\"]\nFROM scratch\nCMD [\"b\"]\n",
    ),
    (
        "LegacyKeyValueFormat",
        "FROM scratch\nENV A b\n",
        "FROM scratch\nENV A=b\n",
    ),
    (
        "RedundantTargetPlatform",
        "FROM --platform=$TARGETPLATFORM scratch\n",
        "FROM --platform=$BUILDPLATFORM scratch\n",
    ),
    (
        "SecretsUsedInArgOrEnv",
        "FROM scratch\nARG DB_PASSWORD\n",
        "FROM scratch\nARG PUBLIC_KEY\nARG KEYBOARD\n",
    ),
    (
        "InvalidDefaultArgInFrom",
        "ARG TAG\nFROM busybox:${TAG}\n",
        "ARG TAG=latest\nFROM busybox:${TAG}\n",
    ),
    (
        "FromPlatformFlagConstDisallowed",
        "FROM --platform=linux/arm64 scratch AS build\n",
        "FROM --platform=linux/arm64 scratch AS build-arm64\n",
    ),
    (
        "CopyIgnoredFile",
        "FROM scratch\nCOPY ignored.txt /\n",
        "FROM scratch AS s\nFROM scratch\nCOPY kept.txt /\nCOPY --from=s ignored.txt /\n",
    ),
    (
        "InvalidDefinitionDescription",
        "# the version to use\nARG VERSION=1\nFROM scratch\n",
        "# VERSION the version to use\nARG VERSION=1\nFROM scratch\n",
    ),
    (
        "ExposeProtoCasing",
        "FROM scratch\nEXPOSE 80/TCP\n",
        "FROM scratch\nEXPOSE 80/tcp\n",
    ),
    (
        "ExposeInvalidFormat",
        "FROM scratch\nEXPOSE 127.0.0.1:80:80\n",
        "FROM scratch\nEXPOSE 80\n",
    ),
];

#[test]
fn every_rule_has_a_case() {
    for r in RULES {
        assert!(CASES.iter().any(|(n, _, _)| *n == r.name), "{}", r.name);
    }
}

#[test]
fn each_rule_fires_on_its_positive_case_only() {
    let all = CheckConfig::parse("experimental=all").unwrap();
    for (rule, bad, good) in CASES {
        assert!(
            rules_found(bad, &all).contains(rule),
            "{rule} did not fire on:\n{bad}"
        );
        assert!(
            !rules_found(good, &all).contains(rule),
            "{rule} fired on:\n{good}"
        );
    }
}

#[test]
fn experimental_rules_run_only_when_named() {
    let text = "# the version\nARG VERSION=1\nFROM scratch\n";
    let default = CheckConfig::default();
    assert!(!rules_found(text, &default).contains(&"InvalidDefinitionDescription"));
    let named = CheckConfig::parse("experimental=InvalidDefinitionDescription").unwrap();
    assert!(rules_found(text, &named).contains(&"InvalidDefinitionDescription"));
}

#[test]
fn skip_and_error_parse() {
    let c = CheckConfig::parse("skip=JSONArgsRecommended,StageNameCasing;error=true").unwrap();
    assert!(c.error);
    assert!(!c.enabled("JSONArgsRecommended", false));
    assert!(c.enabled("FromAsCasing", false));
    let all = CheckConfig::parse("skip=all").unwrap();
    assert!(rules_found("FROM scratch as Build\n", &all).is_empty());
    assert!(CheckConfig::parse("error=maybe").is_err());
    assert!(CheckConfig::parse("bogus=1").is_err());
    assert!(CheckConfig::parse("skip").is_err());
}

#[test]
fn warnings_name_file_line_and_rule() {
    let doc = parse("Dockerfile", b"FROM scratch\nMAINTAINER me\n").unwrap();
    let w = lint(&doc, &CheckConfig::default(), &|_| false);
    assert_eq!(
        w[0].to_string(),
        "Dockerfile:2: MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label"
    );
}
