//! The options of `sse-cluster start`, read from its `--help`: what the deployment
//! files (NixOS module, Kubernetes manifests) are checked against.

use std::process::Command;

/// One option of `sse-cluster start`: its long flag and environment variable.
#[derive(Debug)]
pub(crate) struct HelpOption {
    pub(crate) flag: String,
    pub(crate) env: Option<String>,
}

pub(crate) fn binary_options() -> Vec<HelpOption> {
    let output = Command::new(env!("CARGO_BIN_EXE_sse-cluster"))
        .args(["start", "--help"])
        .env("COLUMNS", "100")
        .output()
        .expect("run sse-cluster start --help");
    assert!(output.status.success(), "start --help failed: {output:?}");
    let help = String::from_utf8(output.stdout).expect("help is UTF-8");
    let options = parse_help(&help);
    // Guard against a parser that silently finds nothing.
    assert!(
        options.iter().any(|o| o.flag == "--gossip.port")
            && options.iter().any(|o| o.flag == "--http.server.port"),
        "could not read the options from:\n{help}"
    );
    options
}

/// Options of a clap help text: an option starts on a line indented less than its
/// description lines and opens with `--flag` or `-x, --flag`; `[env: NAME=]` may wrap
/// onto the following lines. `--help` is not an option to configure.
pub(crate) fn parse_help(help: &str) -> Vec<HelpOption> {
    let mut options: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let body = line.trim_start();
        let indent = line.len() - body.len();
        let body_without_short = match body.split_once(", ") {
            Some((short, rest)) if short.len() == 2 && short.starts_with('-') => rest,
            _ => body,
        };
        if indent > 0 && indent < 8 && body_without_short.starts_with("--") {
            let flag: String = body_without_short
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '=' && *c != '[')
                .collect();
            options.push((flag, String::new()));
        } else if let Some((_, text)) = options.last_mut() {
            text.push(' ');
            text.push_str(body);
        }
    }
    options
        .into_iter()
        .filter(|(flag, _)| flag != "--help")
        .map(|(flag, text)| {
            let env = text.split_once("[env:").map(|(_, rest)| {
                rest.trim_start()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect()
            });
            HelpOption { flag, env }
        })
        .collect()
}
