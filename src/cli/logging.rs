//! The process's log: where it goes, in which format, and which libraries' verbose levels are
//! held back whatever `PAGEGATE_LOG` asks for.

use clap::ValueEnum;

/// How log lines are written: `--log-format`.
#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init_logging(format: LogFormat) {
    crate::access_log::set_format(match format {
        LogFormat::Text => crate::access_log::Format::Text,
        LogFormat::Json => crate::access_log::Format::Json,
    });
    let spec = std::env::var("PAGEGATE_LOG").ok();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(log_filter(spec.as_deref()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // One object per line: timestamp, level, target, and `fields` with the message.
        LogFormat::Json => builder.with_ansi(false).json().init(),
    }
}

/// Libraries whose most verbose levels print more than belongs in a log, and the most they may
/// print unless `PAGEGATE_LOG` names them itself. rustls at `trace` prints whole handshake
/// messages (session tickets, certificates), and at `warn` a line for every handshake whose
/// client does something odd but harmless (an IP address as SNI, as many load tools send), so any
/// client could fill the log: only its errors are kept. lettre is built without its `tracing` feature,
/// since at `debug` it logs every line sent to the SMTP server: the message with its code and
/// link, and the `AUTH` exchange; the `off` here keeps that true should the feature come back
/// through another crate.
const LOG_CEILINGS: &[(&str, tracing_subscriber::filter::LevelFilter)] = &[
    ("rustls", tracing_subscriber::filter::LevelFilter::ERROR),
    (
        "tokio_rustls",
        tracing_subscriber::filter::LevelFilter::ERROR,
    ),
    ("lettre", tracing_subscriber::filter::LevelFilter::OFF),
];

/// The log filter for `PAGEGATE_LOG` (`info` when unset or unparsable), with [`LOG_CEILINGS`]
/// added for libraries it does not name, where its overall level is more verbose than theirs.
fn log_filter(spec: Option<&str>) -> tracing_subscriber::EnvFilter {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::filter::LevelFilter;
    let spec = spec
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("info");
    let (mut filter, spec) = match EnvFilter::try_new(spec) {
        Ok(filter) => (filter, spec),
        Err(_) => (EnvFilter::new("info"), "info"),
    };
    let directives: Vec<&str> = spec.split(',').map(str::trim).collect();
    let overall = directives
        .iter()
        .filter_map(|d| d.parse::<LevelFilter>().ok())
        .max()
        .unwrap_or(LevelFilter::ERROR);
    for (target, ceiling) in LOG_CEILINGS {
        let named = directives
            .iter()
            .any(|d| d.split(['=', '[']).next() == Some(*target));
        if named || overall <= *ceiling {
            continue;
        }
        if let Ok(directive) = format!("{target}={ceiling}").parse() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbose_filters_keep_library_ceilings_unless_the_library_is_named() {
        let shown = |spec: &str| log_filter(Some(spec)).to_string();
        let trace = shown("trace");
        assert!(trace.contains("rustls=error"), "{trace}");
        assert!(trace.contains("lettre=off"), "{trace}");
        let named = shown("debug,rustls=trace");
        assert!(
            named.split(',').any(|d| d == "rustls=trace")
                && !named.split(',').any(|d| d == "rustls=error"),
            "{named}"
        );
        assert!(named.contains("lettre=off"), "{named}");
        // A client's odd handshake is not worth a line at the default level either.
        assert!(shown("info").contains("rustls=error"), "{}", shown("info"));
        assert!(shown("warn").contains("rustls=error"));
        // Quieter overall levels are not raised by a ceiling.
        assert!(!shown("error").contains("rustls"));
        assert_eq!(
            log_filter(None).to_string(),
            log_filter(Some("info")).to_string()
        );
        assert_eq!(
            log_filter(Some("not a filter[")).to_string(),
            log_filter(Some("info")).to_string()
        );
    }
}
