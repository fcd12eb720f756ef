//! The NixOS module (`nixos-module/default.nix`) against the real binary: every flag
//! the module passes exists in `sse-cluster start --help`, and every option of the
//! binary can be set through the module.
//!
//! The module passes each flag as a string literal starting with `--`, and passes the
//! secret through the environment (`export NAME`); that is what this test reads.

use std::collections::BTreeSet;

use crate::common::help::{binary_options, parse_help};

/// Flags the module already passes but the binary does not have yet. Each entry is
/// removed when its flag lands; the test fails while an entry is stale.
const NOT_YET_IN_BINARY: &[&str] = &[];

#[test]
fn every_flag_the_module_passes_exists_in_the_binary() {
    let binary = binary_options();
    let module = module_flags();
    let missing: Vec<&String> = module
        .iter()
        .filter(|flag| !binary.iter().any(|option| &option.flag == *flag))
        .filter(|flag| !NOT_YET_IN_BINARY.contains(&flag.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the NixOS module passes flags that `sse-cluster start` does not know: {missing:?}"
    );
}

#[test]
fn every_option_of_the_binary_is_reachable_from_the_module() {
    let module_text = module_source();
    let module = module_flags();
    let unreachable: Vec<String> = binary_options()
        .into_iter()
        .filter(|option| {
            let passed = module.contains(&option.flag);
            let exported = option
                .env
                .as_ref()
                .is_some_and(|env| module_text.contains(&format!("export {env}")));
            !passed && !exported
        })
        .map(|option| option.flag)
        .collect();
    assert!(
        unreachable.is_empty(),
        "options of `sse-cluster start` with no NixOS module setting: {unreachable:?}"
    );
}

#[test]
fn the_allow_list_holds_only_flags_still_missing_from_the_binary() {
    let binary = binary_options();
    let module = module_flags();
    for flag in NOT_YET_IN_BINARY {
        assert!(
            !binary.iter().any(|option| option.flag == *flag),
            "{flag} exists in the binary now: remove it from NOT_YET_IN_BINARY"
        );
        assert!(
            module.contains(*flag),
            "{flag} is allowed but the module no longer passes it: remove it from NOT_YET_IN_BINARY"
        );
    }
}

#[test]
fn help_parsing_finds_flags_and_environment_names() {
    let help = "\
Options:
      --gossip.hosts <GOSSIP_HOSTS>
          Nodes to join through (host:port of their gossip port), comma-separated [env:
          GOSSIP_HOSTS=]
      --gossip.secretKey <GOSSIP_SECRET_KEY>
          Shared secret [env: GOSSIP_SECRET_KEY]
      --subscriber.buffer <SUBSCRIBER_BUFFER>
          Events a subscriber may fall behind (at most
          --replay.events) [default: 512]
  -h, --help
          Print help
";
    let options = parse_help(help);
    let found: Vec<(&str, Option<&str>)> = options
        .iter()
        .map(|o| (o.flag.as_str(), o.env.as_deref()))
        .collect();
    assert_eq!(
        found,
        [
            ("--gossip.hosts", Some("GOSSIP_HOSTS")),
            ("--gossip.secretKey", Some("GOSSIP_SECRET_KEY")),
            ("--subscriber.buffer", None),
        ]
    );
}

#[test]
fn module_parsing_takes_only_string_literals_starting_with_dashes() {
    let source = r#"
      # `--not.this` in a comment
      description = "Log level (`--log.level`).";
      args = [ "start" "--http.server.port=${toString cfg.port}" ]
        ++ optionals x [ "--gossip.hosts=${hosts}" "--flag" ];
    "#;
    assert_eq!(
        parse_module_flags(source),
        BTreeSet::from([
            "--flag".to_string(),
            "--gossip.hosts".to_string(),
            "--http.server.port".to_string(),
        ])
    );
}

// ---- helpers ----

fn module_source() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/nixos-module/default.nix");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn module_flags() -> BTreeSet<String> {
    let flags = parse_module_flags(&module_source());
    assert!(
        flags.len() >= 10,
        "found too few flags in the module: {flags:?}"
    );
    flags
}

/// Every string literal in Nix source that starts with `--`, up to `=` or its end.
fn parse_module_flags(source: &str) -> BTreeSet<String> {
    source
        .match_indices("\"--")
        .map(|(at, _)| {
            source[at + 1..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
                .collect()
        })
        .collect()
}
