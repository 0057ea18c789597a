//! The test harness: a [`TestServer`] runs larder in-process on `127.0.0.1:0` with a
//! temporary ROOT and stops when dropped; [`TestServer::send`] makes one HTTP request over a
//! new TCP connection; [`TestServer::raw`] writes bytes on a socket and returns what came back.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use larder::config::{Overrides, Settings, env_none};
use larder::http::App;
use larder::state::State;
use larder::store::FileStore;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use tokio::sync::oneshot;

/// The password of every test account.
pub const PASSWORD: &str = "correct horse";

/// The argon2id hash of [`PASSWORD`], computed once.
pub fn password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| larder::auth::hash_password(PASSWORD).unwrap())
}

/// A configuration with accounts alice, bob and root (admin), `/` readable by anyone and
/// writable by signed-in accounts, `/private` for alice only; `extra` (top-level keys) goes first.
pub fn team_config(extra: &str) -> String {
    let hash = password_hash();
    format!(
        r#"
{extra}
[[account]]
name = "alice"
password = "{hash}"
[[account]]
name = "bob"
password = "{hash}"
[[account]]
name = "root"
password = "{hash}"
admin = true
[[rule]]
path = "/"
read = ["*"]
write = ["@authenticated"]
[[rule]]
path = "/private"
read = ["alice"]
write = ["alice"]
"#
    )
}

/// A rule that hides each account's home (`/home/{account}`) from everyone but it.
pub const HOMES: &str = "[[rule]]\npath = \"/home/{account}\"\nread = [\"{account}\"]\n\
                         write = [\"{account}\"]\nhidden = true\n";

/// What must not tell two answers apart (a hidden resource from a missing one): status,
/// headers but Date and the request id, and the body without the problem's `instance`.
pub fn seen(reply: &Reply) -> (u16, Vec<(String, String)>, Value) {
    let mut body = match reply.body.is_empty() {
        true => Value::Null,
        false => serde_json::from_slice(&reply.body).unwrap_or(Value::String(reply.text())),
    };
    if let Some(doc) = body.as_object_mut() {
        doc.remove("instance");
    }
    (reply.status, reply.stable_headers(), body)
}

/// The `Authorization` value for an account with [`PASSWORD`].
pub fn basic(name: &str) -> String {
    basic_raw(&format!("{name}:{PASSWORD}"))
}

/// `Basic base64(text)`.
pub fn basic_raw(text: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(text))
}

/// One HTTP/1.1 client connection, kept alive: requests on it are answered one at a time.
pub struct Connection(SendRequest<Full<Bytes>>);

impl Connection {
    /// A new connection to `addr`.
    pub async fn open(addr: std::net::SocketAddr) -> Result<Connection, BoxError> {
        let stream = TcpStream::connect(addr).await?;
        Ok(Connection::over(stream).await)
    }

    /// HTTP/1.1 over a connected stream.
    pub async fn over(stream: TcpStream) -> Connection {
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection);
        Connection(sender)
    }

    /// Sends one request and reads the whole response; an error if the connection fails.
    pub async fn try_send(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Reply, BoxError> {
        let mut request =
            Request::builder().method(method).uri(target).header("host", "larder.test");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body.into()))?;
        self.0.ready().await?;
        let response = self.0.send_request(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply { status: parts.status.as_u16(), headers: parts.headers, body })
    }

    /// [`Connection::try_send`], failing the test if the connection fails.
    pub async fn send(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        self.try_send(method, target, headers, body).await.unwrap()
    }
}

/// Any error, for helpers whose callers may expect failures (a killed server).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// A header's value as text ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// Every header but Date and the request id (which differ between any two answers), as
    /// sorted (name, value) pairs.
    pub fn stable_headers(&self) -> Vec<(String, String)> {
        let mut headers: Vec<(String, String)> = self
            .headers
            .iter()
            .filter(|(name, _)| *name != "date" && *name != "x-request-id")
            .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
            .collect();
        headers.sort();
        headers
    }

    /// Every value of a header.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers.get_all(name).iter().map(|v| v.to_str().unwrap().to_owned()).collect()
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The names in a JSON listing, in order (asserting it is a 200 listing).
    pub fn entry_names(&self) -> Vec<String> {
        assert_eq!(self.status, 200, "{}", self.text());
        let entries = self.json()["entries"].as_array().cloned().unwrap_or_default();
        entries.iter().map(|e| e["name"].as_str().unwrap().to_owned()).collect()
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts this is a problem document of `status` and `slug`, consistent with its headers.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, slug: &str) {
        assert_eq!(self.status, status, "status; body {}", self.text());
        assert_eq!(self.header("content-type"), "application/problem+json");
        let doc = self.json();
        assert_eq!(doc["type"], format!("/.larder/problems/{slug}"), "{doc}");
        assert_eq!(doc["status"], status);
        assert!(doc["title"].as_str().is_some_and(|t| !t.is_empty()), "{doc}");
        assert!(doc["detail"].as_str().is_some_and(|t| !t.is_empty()), "{doc}");
        assert_eq!(doc["instance"].as_str().unwrap(), self.header("x-request-id"));
        if matches!(status, 401..=403) {
            assert_eq!(self.header("cache-control"), "no-store");
        }
    }
}

/// larder, running in this process.
pub struct TestServer {
    pub addr: std::net::SocketAddr,
    pub root: PathBuf,
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
}

impl TestServer {
    /// larder with every default: ROOT read-only to everyone.
    pub async fn open() -> TestServer {
        TestServer::with_config("").await
    }

    /// larder with this configuration file.
    pub async fn with_config(config: &str) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let file = dir.path().join("larder.toml");
        std::fs::write(&file, config).unwrap();
        let overrides =
            Overrides { root: Some(root.clone()), config: Some(file), ..Overrides::default() };
        let settings = Settings::load(overrides, &env_none).unwrap();
        TestServer::start(settings, dir).await
    }

    async fn start(settings: Settings, dir: tempfile::TempDir) -> TestServer {
        let tls = settings.tls.as_ref().map(|tls| larder::server::tls::load(tls).unwrap());
        let state = Arc::new(State::open(&settings.state).unwrap());
        let store = FileStore::open(&settings.root, state.clone(), &settings.state).unwrap();
        let root = store.root().to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Arc::new(App::new(settings, store, state));
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(async move {
            larder::server::run(listener, app, tls, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        TestServer { addr, root, _dir: dir, stop: Some(stop) }
    }

    /// The state folder (ROOT/.larder).
    pub fn state_dir(&self) -> PathBuf {
        self.root.join(".larder")
    }

    /// A file under ROOT.
    pub fn file(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    /// Writes a file under ROOT directly, as another program would.
    pub fn place(&self, relative: &str, bytes: &[u8]) {
        let path = self.file(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// Sends one request on a new connection and reads the whole response.
    pub async fn send(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        self.send_from([127, 0, 0, 1], method, target, headers, body).await
    }

    /// [`TestServer::send`] from another loopback address (127.0.0.0/8 all reaches us).
    pub async fn send_from(
        &self,
        source: [u8; 4],
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((std::net::Ipv4Addr::from(source), 0).into()).unwrap();
        let stream = socket.connect(self.addr).await.unwrap();
        Connection::over(stream).await.send(method, target, headers, body).await
    }

    /// GET of a collection's JSON listing (HTML is the default), with optional headers.
    pub async fn list(&self, target: &str, headers: &[(&str, &str)]) -> Reply {
        let mut with = headers.to_vec();
        with.push(("accept", "application/json"));
        self.get(target, &with).await
    }

    /// GET with optional headers.
    pub async fn get(&self, target: &str, headers: &[(&str, &str)]) -> Reply {
        self.send("GET", target, headers, Bytes::new()).await
    }

    /// PUT as `account` (or anonymously with `""`).
    pub async fn put_as(&self, account: &str, target: &str, body: impl Into<Bytes>) -> Reply {
        let auth = basic(account);
        let headers: &[(&str, &str)] =
            if account.is_empty() { &[] } else { &[("authorization", auth.as_str())] };
        self.send("PUT", target, headers, body).await
    }

    /// Writes `bytes` on a new connection and returns everything read back until the server
    /// closes (or 5 s pass). Send `Connection: close` to have it close after answering.
    pub async fn raw(&self, bytes: &[u8]) -> String {
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A chunked PUT of `chunks` chunks of 512 bytes as `authorization`, closing the connection.
pub fn chunked_put(target: &str, authorization: &str, chunks: usize) -> Vec<u8> {
    let mut raw = format!(
        "PUT {target} HTTP/1.1\r\nHost: x\r\nAuthorization: {authorization}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..chunks {
        raw.extend_from_slice(b"200\r\n");
        raw.extend_from_slice(&[b'c'; 512]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    raw
}

/// Every file anywhere under `dir` whose name starts with larder's temporary prefix.
pub fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with(larder::path::TEMP_PREFIX) {
            found.push(path.clone());
        }
        if entry.file_type().unwrap().is_dir() {
            found.extend(temp_files(&path));
        }
    }
    found
}
