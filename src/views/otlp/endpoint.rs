//! Where OTLP goes and how it is sent: OTLP/HTTP with protobuf bodies, one blocking POST per
//! batch (the `ureq` crate), retried with backoff on what the OTLP specification calls
//! retryable (connection errors, 429, 502, 503, 504).
//!
//! Configuration follows the OpenTelemetry environment variables:
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (base URL; `/v1/traces` and `/v1/logs` are appended),
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT` (used as
//! they are), `OTEL_EXPORTER_OTLP_HEADERS` (and the per-signal `..._TRACES_HEADERS`,
//! `..._LOGS_HEADERS`): `key=value,key2=value2`, values percent-decoded.

use prost::Message;
use std::time::Duration;

/// The default endpoint of an OpenTelemetry Collector's OTLP/HTTP receiver.
pub const DEFAULT_ENDPOINT: &str = "http://localhost:4318";

/// One signal's destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    pub headers: Vec<(String, String)>,
}

/// Where traces and logs go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub traces: Target,
    pub logs: Target,
}

/// A malformed configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("OTLP endpoint `{0}` is not an http:// URL (pm2-trace sends OTLP/HTTP without TLS: point it at a local OpenTelemetry Collector, which forwards over TLS)")]
    NotHttp(String),
    #[error("{var}: `{item}` is not key=value")]
    BadHeader { var: &'static str, item: String },
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `OTEL_EXPORTER_OTLP_HEADERS` syntax: `k=v,k2=v2` (W3C baggage-like, values
/// percent-encoded).
pub fn parse_headers(var: &'static str, value: &str) -> Result<Vec<(String, String)>, ConfigError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| match item.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                Ok((percent_decode(k.trim()), percent_decode(v.trim())))
            }
            _ => Err(ConfigError::BadHeader {
                var,
                item: item.to_owned(),
            }),
        })
        .collect()
}

fn check_http(url: &str) -> Result<(), ConfigError> {
    if url.starts_with("http://") {
        Ok(())
    } else {
        Err(ConfigError::NotHttp(url.to_owned()))
    }
}

impl Endpoint {
    /// From `--otlp URL` (`Some("")` for `--otlp` alone) and the environment (`env` reads a
    /// variable). The flag's URL is a base URL, like `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn resolve(
        flag: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Endpoint, ConfigError> {
        let nonempty = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let base = if flag.is_empty() {
            nonempty("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.into())
        } else {
            flag.to_owned()
        };
        let base = base.trim().trim_end_matches('/').to_owned();
        let signal = |path: &str, var: &str| -> String {
            // A signal-specific variable wins only when no URL was given on the command line.
            match (flag.is_empty(), nonempty(var)) {
                (true, Some(u)) => u.trim().to_owned(),
                _ => format!("{base}{path}"),
            }
        };
        let common = match nonempty("OTEL_EXPORTER_OTLP_HEADERS") {
            Some(h) => parse_headers("OTEL_EXPORTER_OTLP_HEADERS", &h)?,
            None => Vec::new(),
        };
        let headers = |var: &'static str| -> Result<Vec<(String, String)>, ConfigError> {
            let mut h = common.clone();
            if let Some(v) = nonempty(var) {
                for (k, val) in parse_headers(var, &v)? {
                    h.retain(|(k2, _)| !k2.eq_ignore_ascii_case(&k));
                    h.push((k, val));
                }
            }
            Ok(h)
        };
        let traces = Target {
            url: signal("/v1/traces", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            headers: headers("OTEL_EXPORTER_OTLP_TRACES_HEADERS")?,
        };
        let logs = Target {
            url: signal("/v1/logs", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"),
            headers: headers("OTEL_EXPORTER_OTLP_LOGS_HEADERS")?,
        };
        check_http(&traces.url)?;
        check_http(&logs.url)?;
        Ok(Endpoint { traces, logs })
    }
}

/// How hard to try one batch.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Attempts in all (1 = no retry).
    pub attempts: u32,
    /// Wait before the first retry; doubled each time.
    pub first_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// Bound on one attempt (connect, send, answer).
    pub timeout: Duration,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry {
            attempts: 4,
            first_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(4),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Why a batch was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{url}: HTTP {status}{}", if .body.is_empty() { String::new() } else { format!(": {}", .body) })]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url}: {error}")]
    Transport { url: String, error: String },
}

impl SendError {
    /// Worth another attempt (OTLP/HTTP: 429, 502, 503, 504 and connection failures).
    pub fn retryable(&self) -> bool {
        match self {
            SendError::Status { status, .. } => matches!(status, 429 | 502 | 503 | 504),
            SendError::Transport { .. } => true,
        }
    }
}

/// A blocking OTLP/HTTP client: one per exporting thread.
pub struct Client {
    agent: ureq::Agent,
    retry: Retry,
}

impl Client {
    pub fn new(retry: Retry) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(retry.timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        Client { agent, retry }
    }

    fn post_once(&self, target: &Target, body: &[u8]) -> Result<(), SendError> {
        let mut req = self
            .agent
            .post(&target.url)
            .header("Content-Type", "application/x-protobuf");
        for (k, v) in &target.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        match req.send(body) {
            Ok(resp) => {
                let status = resp.status().as_u16();
                if (200..300).contains(&status) {
                    return Ok(());
                }
                let mut text = resp
                    .into_body()
                    .with_config()
                    .limit(4096)
                    .read_to_string()
                    .unwrap_or_default();
                text.truncate(text.trim_end().len());
                Err(SendError::Status {
                    url: target.url.clone(),
                    status,
                    body: text.chars().take(200).collect(),
                })
            }
            Err(e) => Err(SendError::Transport {
                url: target.url.clone(),
                error: e.to_string(),
            }),
        }
    }

    /// POST `msg` to `target`, retrying what is retryable with doubling backoff; `give_up`
    /// is asked before each wait (a stopping recorder does not wait out the backoff).
    pub fn send(
        &self,
        target: &Target,
        msg: &impl Message,
        give_up: &dyn Fn() -> bool,
    ) -> Result<(), SendError> {
        let body = msg.encode_to_vec();
        let mut wait = self.retry.first_backoff;
        let mut attempt = 1;
        loop {
            match self.post_once(target, &body) {
                Ok(()) => return Ok(()),
                Err(e) if e.retryable() && attempt < self.retry.attempts && !give_up() => {
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(self.retry.max_backoff);
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn flag_env_and_default() {
        let e = Endpoint::resolve("http://c:4318/", env(&[])).unwrap();
        assert_eq!(e.traces.url, "http://c:4318/v1/traces");
        assert_eq!(e.logs.url, "http://c:4318/v1/logs");
        let e = Endpoint::resolve("", env(&[])).unwrap();
        assert_eq!(e.traces.url, "http://localhost:4318/v1/traces");
        let e = Endpoint::resolve(
            "",
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4318"),
                ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://logs:9/custom"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%20b, x-team = web"),
                ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-team=traces"),
            ]),
        )
        .unwrap();
        assert_eq!(e.traces.url, "http://otel:4318/v1/traces");
        assert_eq!(e.logs.url, "http://logs:9/custom");
        assert_eq!(
            e.logs.headers,
            vec![
                ("api-key".into(), "a b".into()),
                ("x-team".into(), "web".into())
            ]
        );
        assert_eq!(
            e.traces.headers,
            vec![
                ("api-key".into(), "a b".into()),
                ("x-team".into(), "traces".into())
            ]
        );
        // The command line's URL wins over the per-signal variables.
        let e = Endpoint::resolve(
            "http://flag:1",
            env(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://env:2/x")]),
        )
        .unwrap();
        assert_eq!(e.traces.url, "http://flag:1/v1/traces");
    }

    #[test]
    fn bad_configuration_is_a_clear_error() {
        let e = Endpoint::resolve("https://x", env(&[])).unwrap_err();
        assert!(e.to_string().contains("not an http:// URL"), "{e}");
        let e =
            Endpoint::resolve("", env(&[("OTEL_EXPORTER_OTLP_HEADERS", "novalue")])).unwrap_err();
        assert!(e.to_string().contains("OTEL_EXPORTER_OTLP_HEADERS"), "{e}");
    }

    #[test]
    fn what_is_retried() {
        let st = |status| SendError::Status {
            url: "u".into(),
            status,
            body: String::new(),
        };
        assert!(st(503).retryable() && st(429).retryable());
        assert!(!st(500).retryable() && !st(400).retryable());
        assert!(SendError::Transport {
            url: "u".into(),
            error: "refused".into()
        }
        .retryable());
    }
}
