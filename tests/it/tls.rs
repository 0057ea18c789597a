//! HTTPS with HTTP/2 by ALPN, HTTP/1.1 over TLS, and h2c with prior knowledge: the same bytes.

use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use crate::harness::*;

struct Certificate {
    _dir: tempfile::TempDir,
    der: CertificateDer<'static>,
    config: String,
}

fn certificate() -> Certificate {
    let dir = tempfile::tempdir().unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
    let config = format!(
        "tls_cert = {:?}\ntls_key = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    Certificate { _dir: dir, der: made.cert.der().clone(), config }
}

async fn tls_connect(
    server: &TestServer,
    certificate: &Certificate,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certificate.der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let stream = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(alpn), "ALPN");
    stream
}

fn big_file() -> Vec<u8> {
    (0..1 << 20).map(|i: u32| (i * 7 % 251) as u8).collect()
}

async fn h2_get<I>(io: I, uri: &str) -> (u16, Bytes)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    h2_send(io, "GET", uri, &[]).await
}

/// One request over a new HTTP/2 connection; its status and whole body (failing the test if
/// the stream fails).
async fn h2_send<I>(io: I, method: &str, uri: &str, headers: &[(&str, &str)]) -> (u16, Bytes)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Empty::<Bytes>::new()).unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    (status, response.into_body().collect().await.unwrap().to_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_http2_by_alpn_and_http1() {
    let certificate = certificate();
    let server = TestServer::with_config(&certificate.config).await;
    let bytes = big_file();
    server.place("big.bin", &bytes);

    let stream = tls_connect(&server, &certificate, b"h2").await;
    let (status, body) = h2_get(stream, "https://localhost/big.bin").await;
    assert_eq!(status, 200);
    assert!(body[..] == bytes[..], "HTTP/2 over TLS: the same bytes");

    let stream = tls_connect(&server, &certificate, b"http/1.1").await;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let request =
        Request::get("/big.bin").header("host", "localhost").body(Empty::<Bytes>::new()).unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.into_body().collect().await.unwrap().to_bytes()[..] == bytes[..]);

    // Plain HTTP to the TLS port gets nowhere.
    let reply = server.raw(b"GET /big.bin HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
    assert!(!reply.starts_with("HTTP/1.1 200"), "{}", &reply[..reply.len().min(60)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_with_prior_knowledge() {
    let server = TestServer::open().await;
    let bytes = big_file();
    server.place("big.bin", &bytes);
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (status, body) = h2_get(stream, "http://localhost/big.bin").await;
    assert_eq!(status, 200);
    assert!(body[..] == bytes[..], "h2c: the same bytes");
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (status, body) = h2_get(stream, "http://localhost/missing").await;
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("not-found"));
    // HEAD of an error: the head, and no body (a body would be a stream error).
    let wrong = [("authorization", "Basic bm9ib2R5Ondyb25n")];
    for (target, headers, want) in
        [("/missing", &[][..], 404), ("/big.bin", &wrong[..], 401), ("/big.bin", &[][..], 200)]
    {
        let stream = TcpStream::connect(server.addr).await.unwrap();
        let (status, body) =
            h2_send(stream, "HEAD", &format!("http://localhost{target}"), headers).await;
        assert_eq!((status, body.len()), (want, 0), "HEAD {target}");
    }
}
