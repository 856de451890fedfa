//! The HTTPS benchmark's handshake client (`.ci/bench-https.sh`): a new TLS connection for every
//! request, from many connections at once, with or without resuming a session.
//!
//! `openssl s_time` makes one connection at a time, so it measures the loopback round trips more
//! than the server, and wrk and h2load resume or not as their OpenSSL build decides; this client
//! says which it does and counts the handshakes the server really resumed, so a server that
//! silently refuses resumption shows as such instead of as a slow server. The certificate is not
//! checked against a root (the benchmark's are self-signed), but the server's handshake signature
//! is verified, as every real client does: that is part of what a full handshake costs.
//!
//! Each connection sends `GET PATH` with `Connection: close` and reads the answer to its end, so
//! the server closes first, as it does for a browser's last request on a connection.
//!
//! ```text
//! tls_handshakes --addr 127.0.0.1:8443 [--name localhost] [--path /1k] [--connections 64]
//!                [--seconds 10] [--resume]
//! ```
//!
//! Prints one line: `HANDSHAKES per_sec=… done=… resumed=… errors=… seconds=…`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, Tls12Resumption};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

struct Args {
    addr: SocketAddr,
    name: String,
    path: String,
    connections: usize,
    seconds: f64,
    resume: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: SocketAddr::from(([127, 0, 0, 1], 8443)),
        name: "localhost".into(),
        path: "/1k".into(),
        connections: 64,
        seconds: 10.0,
        resume: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => args.addr = value()?.parse().map_err(|e| format!("--addr: {e}"))?,
            "--name" => args.name = value()?,
            "--path" => args.path = value()?,
            "--connections" => {
                args.connections = value()?
                    .parse()
                    .map_err(|e| format!("--connections: {e}"))?
            }
            "--seconds" => {
                args.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?
            }
            "--resume" => args.resume = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

/// Accepts any certificate (the benchmark's are self-signed) but checks the handshake signature
/// with the server's key, so the client's share of a handshake is a real client's.
#[derive(Debug)]
struct SignatureOnly(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for SignatureOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[derive(Default)]
struct Counts {
    done: AtomicU64,
    resumed: AtomicU64,
    errors: AtomicU64,
}

/// One request on a new connection; `Ok(true)` when the server resumed the session.
async fn one(
    connector: &TlsConnector,
    args: &Args,
    name: &ServerName<'static>,
    request: &[u8],
) -> std::io::Result<bool> {
    let tcp = TcpStream::connect(args.addr).await?;
    tcp.set_nodelay(true)?;
    let mut tls = connector.connect(name.clone(), tcp).await?;
    let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    tls.write_all(request).await?;
    let mut answer = Vec::with_capacity(2048);
    let mut buf = [0u8; 4096];
    loop {
        match tls.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            // A server that closes without close_notify after a complete answer is fine.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
    }
    if !answer.starts_with(b"HTTP/1.1 200") {
        return Err(std::io::Error::other("the answer is not 200"));
    }
    Ok(resumed)
}

fn main() -> Result<(), String> {
    let args = Arc::new(parse_args()?);
    // The TLS 1.3 suites in the order browsers offer them (Chrome and Firefox put AES-128-GCM
    // with SHA-256 first), so the servers run the key schedule real visitors make them run;
    // rustls's own order starts with AES-256-GCM and SHA-384.
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| suite.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    let provider = Arc::new(provider);
    let algorithms = provider.signature_verification_algorithms;
    // One session store per connection, like one browser per visitor: with a store shared by
    // every connection, rustls keeps at most eight tickets for a server name, and connections
    // starting together found it empty and fell back to full handshakes.
    let connector = |resume: bool| -> Result<TlsConnector, String> {
        let mut config =
            rustls::ClientConfig::builder_with_provider(provider.clone() as Arc<CryptoProvider>)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(SignatureOnly(algorithms)))
                .with_no_client_auth();
        config.resumption = if resume {
            Resumption::in_memory_sessions(4).tls12_resumption(Tls12Resumption::SessionIdOrTickets)
        } else {
            Resumption::disabled()
        };
        Ok(TlsConnector::from(Arc::new(config)))
    };
    let connectors = (0..args.connections)
        .map(|_| connector(args.resume))
        .collect::<Result<Vec<_>, _>>()?;
    let name = ServerName::try_from(args.name.clone()).map_err(|e| format!("--name: {e}"))?;
    let request: Arc<[u8]> = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        args.path, args.name
    )
    .into_bytes()
    .into();

    // One thread, like wrk and h2load with one thread each: the server gets the other cores.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let elapsed = runtime.block_on(async {
        let started = Instant::now();
        let mut tasks = Vec::new();
        for connector in connectors {
            let (args, name, request) = (args.clone(), name.clone(), request.clone());
            let (counts, stop) = (counts.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let result = one(&connector, &args, &name, &request).await;
                    // Only what ended within the measured time counts.
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match result {
                        Ok(resumed) => {
                            counts.done.fetch_add(1, Ordering::Relaxed);
                            if resumed {
                                counts.resumed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(_) => {
                            counts.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
        stop.store(true, Ordering::Relaxed);
        let elapsed = started.elapsed();
        for task in tasks {
            let _ = task.await;
        }
        elapsed
    });
    let done = counts.done.load(Ordering::Relaxed);
    println!(
        "HANDSHAKES per_sec={:.1} done={done} resumed={} errors={} seconds={:.2}",
        done as f64 / elapsed.as_secs_f64(),
        counts.resumed.load(Ordering::Relaxed),
        counts.errors.load(Ordering::Relaxed),
        elapsed.as_secs_f64()
    );
    Ok(())
}
