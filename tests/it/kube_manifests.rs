//! The Kubernetes manifests (`deploy/kubernetes`) against the real binary: every flag
//! they pass to `sse-cluster start`, and every environment variable they set, is one
//! `start --help` knows. A typo there would stop every pod at start (or, for an
//! environment variable, be silently ignored).
//!
//! The source files are read always; the rendered output of `kubectl kustomize` (what
//! is applied, patches included) when kubectl is installed. Without kubectl that part
//! is skipped with a note, or fails if `SSE_REQUIRE_KUBECTL=1` (CI sets it).
//! `.ci/kube-check` validates the rendered objects against the Kubernetes schemas.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::help::binary_options;

/// Environment variables the manifests set that are not options of the binary.
const NOT_OPTIONS: &[&str] = &[];

#[test]
fn every_flag_and_variable_in_the_manifest_sources_exists_in_the_binary() {
    let mut text = String::new();
    for path in yaml_files(&kube_dir()) {
        text.push_str(&std::fs::read_to_string(&path).expect("read manifest"));
        text.push('\n');
    }
    check_against_binary(&text, "deploy/kubernetes/**/*.yaml");
}

#[test]
fn every_flag_and_variable_in_the_rendered_manifests_exists_in_the_binary() {
    if !kubectl_available() {
        return;
    }
    for dir in ["base", "overlays/example"] {
        let output = Command::new("kubectl")
            .arg("kustomize")
            .arg(kube_dir().join(dir))
            .output()
            .expect("run kubectl kustomize");
        assert!(
            output.status.success(),
            "kubectl kustomize {dir} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let rendered = String::from_utf8(output.stdout).expect("YAML is UTF-8");
        assert!(
            rendered.lines().any(|line| line.trim() == "- start"),
            "{dir}: the container's arguments do not begin with `start`:\n{rendered}"
        );
        check_against_binary(&rendered, dir);
    }
}

#[test]
fn manifest_parsing_finds_flags_and_variables_but_not_port_names() {
    let yaml = "\
      containers:
        - args:
            - start
            - --gossip.hosts=sse-cluster-peers:42000
            # - --not.this
            - --log.format=json
          env:
            - name: GOSSIP_NODE_ID
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
          ports:
            - name: http
      patch: |-
        - op: replace
          value: --http.server.maxConnections=20000
";
    assert_eq!(
        manifest_flags(yaml),
        BTreeSet::from([
            "--gossip.hosts".to_string(),
            "--http.server.maxConnections".to_string(),
            "--log.format".to_string(),
        ])
    );
    assert_eq!(
        manifest_env_names(yaml),
        BTreeSet::from(["GOSSIP_NODE_ID".to_string()])
    );
}

// ---- helpers ----

fn check_against_binary(yaml: &str, what: &str) {
    let binary = binary_options();
    let flags = manifest_flags(yaml);
    let env_names = manifest_env_names(yaml);
    // Guard against a parser that silently finds nothing.
    assert!(
        flags.contains("--gossip.hosts") && env_names.contains("GOSSIP_SECRET_KEY"),
        "{what}: found too little (flags {flags:?}, environment {env_names:?})"
    );
    let unknown_flags: Vec<&String> = flags
        .iter()
        .filter(|flag| !binary.iter().any(|option| &option.flag == *flag))
        .collect();
    assert!(
        unknown_flags.is_empty(),
        "{what} passes flags that `sse-cluster start` does not know: {unknown_flags:?}"
    );
    let unknown_env: Vec<&String> = env_names
        .iter()
        .filter(|name| !NOT_OPTIONS.contains(&name.as_str()))
        .filter(|name| {
            !binary
                .iter()
                .any(|option| option.env.as_deref() == Some(name.as_str()))
        })
        .collect();
    assert!(
        unknown_env.is_empty(),
        "{what} sets environment variables that `sse-cluster start` does not read: {unknown_env:?}"
    );
}

/// Every `--flag` a YAML list item or a patch's `value:` passes, up to `=`. Comments
/// are skipped.
fn manifest_flags(yaml: &str) -> BTreeSet<String> {
    yaml.lines()
        .map(str::trim_start)
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            line.strip_prefix("- ")
                .or_else(|| line.strip_prefix("value: "))
        })
        .map(|item| item.trim().trim_matches(['"', '\'']))
        .filter(|item| item.starts_with("--"))
        .map(|item| item.split('=').next().unwrap_or(item).to_string())
        .collect()
}

/// The names of container environment variables: `name:` entries in upper case (port
/// and container names are lower case in Kubernetes).
fn manifest_env_names(yaml: &str) -> BTreeSet<String> {
    yaml.lines()
        .map(str::trim_start)
        .filter_map(|line| line.strip_prefix("- name: "))
        .map(|name| name.trim().trim_matches(['"', '\'']))
        .filter(|name| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_string)
        .collect()
}

fn kube_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read deploy/kubernetes") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            files.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// Whether `kubectl` runs; if not, says so, and fails when SSE_REQUIRE_KUBECTL=1.
fn kubectl_available() -> bool {
    let found = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("SSE_REQUIRE_KUBECTL").as_deref() != Ok("1"),
            "kubectl is not installed and SSE_REQUIRE_KUBECTL=1"
        );
        eprintln!("skipped: kubectl is not installed, so the rendered manifests are not checked (the sources are)");
    }
    found
}
