//! The container image, checked as far as a machine without a container engine allows: the
//! Dockerfile passes hadolint, builds the binary with the very command CI builds it with, and
//! runs it the way the docs promise (non-root, `/data` volume, fixed config path, a health check
//! the binary answers itself).

use std::path::Path;
use std::process::Command;

/// The Dockerfile as instructions: continuation lines joined, comments dropped.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let joined = std::mem::take(&mut current);
                if let Some((keyword, rest)) = joined.split_once(char::is_whitespace) {
                    out.push((keyword.to_ascii_uppercase(), rest.trim().to_owned()));
                }
            }
        }
    }
    out
}

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("hadolint")
        .arg(Path::new(root).join("Dockerfile"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run hadolint ({e}); .ci/run installs it"));
    assert!(
        out.status.success(),
        "hadolint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_image_builds_with_the_command_ci_runs() {
    let dockerfile = instructions(&read("Dockerfile"));
    let build = dockerfile
        .iter()
        .filter(|(k, _)| k == "RUN")
        .find_map(|(_, args)| {
            // Skip the `--mount=…` options in front of the first command.
            args.split("&&")
                .find_map(|step| step.find("cargo build").map(|at| step[at..].trim()))
        })
        .expect("the Dockerfile builds with cargo");
    assert_eq!(build, "cargo build --release --locked");
    let ci = read(".ci/run");
    assert!(
        ci.lines().any(|line| line.trim() == build),
        ".ci/run does not run `{build}`, so CI does not prove the image's build step"
    );
    // What the build stage copies in exists and is not excluded from the build context.
    let ignored = read(".dockerignore");
    for (_, args) in dockerfile
        .iter()
        .filter(|(k, a)| k == "COPY" && !a.starts_with("--from"))
    {
        let mut parts: Vec<&str> = args.split_whitespace().collect();
        parts.pop();
        for source in parts {
            assert!(
                Path::new(env!("CARGO_MANIFEST_DIR")).join(source).exists(),
                "COPY {source}: missing"
            );
            let name = source.trim_end_matches('/');
            assert!(
                !ignored
                    .lines()
                    .any(|l| l.trim().trim_end_matches('/') == name),
                "COPY {source}: excluded by .dockerignore"
            );
        }
    }
}

#[test]
fn the_image_runs_unprivileged_with_a_data_volume_and_a_health_check() {
    let dockerfile = instructions(&read("Dockerfile"));
    let last_stage = dockerfile
        .iter()
        .rposition(|(k, _)| k == "FROM")
        .expect("a FROM");
    let runtime = &dockerfile[last_stage..];
    assert!(
        dockerfile.iter().filter(|(k, _)| k == "FROM").count() >= 2,
        "multi-stage: the toolchain stays out of the image"
    );
    let value = |keyword: &str| {
        runtime
            .iter()
            .rev()
            .find(|(k, _)| k == keyword)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {keyword} in the runtime stage"))
    };
    let user = value("USER");
    assert!(
        !["root", "0", "0:0"].contains(&user.as_str()),
        "runs as {user}"
    );
    assert!(value("VOLUME").contains("/data"));
    assert_eq!(
        value("ENV"),
        "PAGEGATE_CONFIG=/etc/pagegate/gateway.toml",
        "the config lives at a fixed path"
    );
    let health = value("HEALTHCHECK");
    assert!(
        health.contains(r#"CMD ["/usr/local/bin/pagegate", "healthcheck""#),
        "{health}"
    );
    // The health check command exists in this binary and reads the config from that variable.
    let binary = env!("CARGO_BIN_EXE_pagegate");
    let out = Command::new(binary)
        .args(["healthcheck", "--help"])
        .output()
        .expect("run pagegate");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(help.contains("PAGEGATE_CONFIG"), "{help}");
}
