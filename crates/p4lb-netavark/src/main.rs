//! `p4lb-netavark`: the netavark plugin binary (installed as
//! `/usr/libexec/netavark/p4lb`). `info`, `create`, `setup NETNS`, `teardown NETNS`;
//! JSON on stdin (at most [`p4lb_netavark::MAX_INPUT`] bytes) and stdout, errors as
//! `{"error": "..."}` with exit status 1. Logs go to stderr when `P4LB_NETAVARK_LOG`
//! is set (e.g. `debug`).

use std::io::{Read, Write};
use std::process::ExitCode;

use anyhow::Context;
use p4lb_netavark::{plugin, Error, MAX_INPUT};

/// stdin, refused past [`MAX_INPUT`] bytes. (`p4lb_api::read_bounded` reads files by
/// path; stdin is a pipe, so the bound is applied here with `take`.)
fn read_stdin() -> Result<Vec<u8>, Error> {
    let mut buf = Vec::new();
    std::io::stdin()
        .take(MAX_INPUT + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::Input(format!("reading stdin: {e}")))?;
    if buf.len() as u64 > MAX_INPUT {
        return Err(Error::Input(format!(
            "stdin is larger than {MAX_INPUT} bytes"
        )));
    }
    Ok(buf)
}

fn netns_arg(args: &[String], verb: &str) -> Result<String, Error> {
    match args {
        [_, ns] => Ok(ns.clone()),
        _ => Err(Error::Usage(format!(
            "p4lb-netavark {verb} NETNS_PATH < input.json"
        ))),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("starting the tokio runtime")
}

fn run(args: &[String]) -> Result<Option<String>, Error> {
    let verb = args.first().map(String::as_str).unwrap_or("");
    match verb {
        "info" => Ok(Some(json(&plugin::info()))),
        "create" => plugin::create(&read_stdin()?).map(|v| Some(v.to_string())),
        "setup" | "teardown" => {
            let netns = netns_arg(args, verb)?;
            let input = read_stdin()?;
            let rt = runtime().map_err(|e| Error::Input(format!("{e:#}")))?;
            if verb == "setup" {
                rt.block_on(plugin::setup(&netns, &input))
                    .map(|s| Some(json(&s)))
            } else {
                rt.block_on(plugin::teardown(&netns, &input)).map(|()| None)
            }
        }
        _ => Err(Error::Usage(
            "p4lb-netavark info | create | setup NETNS_PATH | teardown NETNS_PATH \
             (JSON on stdin; run by netavark for `podman network create -d p4lb` networks)"
                .into(),
        )),
    }
}

/// One line of JSON for stdout.
fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v)
        .unwrap_or_else(|e| format!("{{\"error\":\"p4lb: encoding the output: {e}\"}}"))
}

fn main() -> ExitCode {
    if let Ok(filter) = std::env::var("P4LB_NETAVARK_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = run(&args);
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(Some(text)) => {
            if writeln!(out, "{text}").is_err() {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::debug!(error = %e, "failed");
            let _ = writeln!(out, "{}", e.to_json());
            ExitCode::FAILURE
        }
    }
}
