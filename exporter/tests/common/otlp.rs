//! OTLP trace receivers for the integration tests: a gRPC TraceService and an OTLP/HTTP
//! protobuf endpoint that decode every export with the official opentelemetry-proto
//! definitions and keep the spans for assertions, plus a collector that accepts connections and
//! never answers.
//!
//! Tests are synchronous and run the real `tracepkt` binary as a child process, so each server
//! runs its own tokio runtime on a background thread. Dropping a `Receiver` or a `Hung` stops it
//! and closes its connections.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use tokio::sync::oneshot;

/// An attribute value, as OTLP's `AnyValue` carries it.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    Bytes(Vec<u8>),
    Array(Vec<Value>),
    Map(BTreeMap<String, Value>),
    /// An `AnyValue` with no value set (or one only the profiling signal uses).
    Empty,
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Double(d) => Some(*d),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    fn from_proto(v: Option<&AnyValue>) -> Value {
        use any_value::Value as V;
        match v.and_then(|v| v.value.as_ref()) {
            Some(V::StringValue(s)) => Value::Str(s.clone()),
            Some(V::IntValue(i)) => Value::Int(*i),
            Some(V::DoubleValue(d)) => Value::Double(*d),
            Some(V::BoolValue(b)) => Value::Bool(*b),
            Some(V::BytesValue(b)) => Value::Bytes(b.clone()),
            Some(V::ArrayValue(a)) => Value::Array(a.values.iter().map(|v| Value::from_proto(Some(v))).collect()),
            Some(V::KvlistValue(kv)) => Value::Map(attributes(&kv.values)),
            Some(V::StringValueStrindex(_)) | None => Value::Empty,
        }
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, Value> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), Value::from_proto(kv.value.as_ref())))
        .collect()
}

/// One received span with its resource and scope, flattened out of the OTLP request tree.
#[derive(Clone, Debug)]
pub struct Span {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// 16 lowercase hex digits, empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub attributes: BTreeMap<String, Value>,
    /// The proto's `Status.code`: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    pub status_message: String,
    pub resource: BTreeMap<String, Value>,
    /// The instrumentation scope's name.
    pub scope: String,
}

impl Span {
    /// A string attribute; None when absent or of another type.
    pub fn attr_str(&self, k: &str) -> Option<String> {
        self.attributes.get(k)?.as_str().map(str::to_string)
    }

    /// An integer attribute; None when absent or of another type.
    pub fn attr_int(&self, k: &str) -> Option<i64> {
        self.attributes.get(k)?.as_int()
    }

    /// A string resource attribute; None when absent or of another type.
    pub fn resource_str(&self, k: &str) -> Option<String> {
        self.resource.get(k)?.as_str().map(str::to_string)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every span of a request, each with its resource and scope.
fn flatten(req: &ExportTraceServiceRequest) -> Vec<Span> {
    let mut out = Vec::new();
    for rs in &req.resource_spans {
        let resource = rs
            .resource
            .as_ref()
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        for ss in &rs.scope_spans {
            let scope = ss.scope.as_ref().map(|s| s.name.clone()).unwrap_or_default();
            for s in &ss.spans {
                let status = s.status.clone().unwrap_or_default();
                out.push(Span {
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    name: s.name.clone(),
                    start_unix_nano: s.start_time_unix_nano,
                    end_unix_nano: s.end_time_unix_nano,
                    attributes: attributes(&s.attributes),
                    status_code: status.code,
                    status_message: status.message,
                    resource: resource.clone(),
                    scope: scope.clone(),
                });
            }
        }
    }
    out
}

/// What the server threads share with the test.
#[derive(Default)]
struct Store {
    spans: Mutex<Vec<Span>>,
    requests: AtomicUsize,
}

impl Store {
    fn record(&self, req: &ExportTraceServiceRequest) {
        self.spans.lock().unwrap().extend(flatten(req));
    }
}

/// An OTLP trace receiver (on 127.0.0.1 unless asked otherwise), serving on a background thread
/// until dropped.
pub struct Receiver {
    /// `http://127.0.0.1:PORT`: the base address, without `/v1/traces` for OTLP/HTTP.
    pub endpoint: String,
    store: Arc<Store>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

struct Grpc(Arc<Store>);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.requests.fetch_add(1, Ordering::SeqCst);
        self.0.record(request.get_ref());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// `POST /v1/traces` as the OTLP/HTTP spec has it for protobuf: a binary
/// ExportTraceServiceRequest in, a binary ExportTraceServiceResponse out. JSON and compressed
/// bodies are refused with 415, so a test sees an exporter that sends them.
async fn http_export(store: Arc<Store>, headers: HeaderMap, body: Bytes) -> Response {
    store.requests.fetch_add(1, Ordering::SeqCst);
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ctype.starts_with("application/x-protobuf") {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("content-type {ctype:?}")).into_response();
    }
    if let Some(enc) = headers.get(header::CONTENT_ENCODING)
        && enc != "identity"
    {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("content-encoding {enc:?}")).into_response();
    }
    let req = match ExportTraceServiceRequest::decode(body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("not an ExportTraceServiceRequest: {e}"),
            )
                .into_response();
        }
    };
    store.record(&req);
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

/// Binds `ip` on a free port, for a server about to run on its own runtime.
fn bind(ip: IpAddr) -> (std::net::TcpListener, SocketAddr) {
    let listener = TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {ip}:0: {e}"));
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

impl Receiver {
    /// An OTLP/gRPC TraceService; `endpoint` is `http://127.0.0.1:PORT`.
    pub fn grpc() -> Receiver {
        Self::grpc_on(IpAddr::from([127, 0, 0, 1]))
    }

    /// The same on another address of this machine, for senders elsewhere (a VM on a bridge).
    pub fn grpc_on(ip: IpAddr) -> Receiver {
        Self::start(ip, "otlp-grpc", |listener, store| async move {
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(Grpc(store)))
                .serve_with_incoming(incoming)
                .await
                .expect("OTLP/gRPC receiver");
        })
    }

    /// OTLP/HTTP with protobuf bodies on `POST /v1/traces`; `endpoint` is the base address
    /// `http://127.0.0.1:PORT`.
    pub fn http() -> Receiver {
        Self::start(
            IpAddr::from([127, 0, 0, 1]),
            "otlp-http",
            |listener, store| async move {
                let app = axum::Router::new().route(
                    "/v1/traces",
                    axum::routing::post(move |headers: HeaderMap, body: Bytes| http_export(store, headers, body)),
                );
                axum::serve(listener, app).await.expect("OTLP/HTTP receiver");
            },
        )
    }

    /// Runs `serve` on a current-thread runtime on its own thread. Stopping drops the runtime,
    /// which cancels every connection task too: a graceful shutdown could wait forever on a
    /// client that keeps its connection open.
    fn start<F, Fut>(ip: IpAddr, name: &str, serve: F) -> Receiver
    where
        F: FnOnce(tokio::net::TcpListener, Arc<Store>) -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let (listener, addr) = bind(ip);
        let store = Arc::new(Store::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let shared = store.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    tokio::select! {
                        _ = serve(listener, shared) => {}
                        _ = stopped => {}
                    }
                });
            })
            .unwrap();
        Receiver {
            endpoint: format!("http://{addr}"),
            store,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<Span> {
        self.store.spans.lock().unwrap().clone()
    }

    /// Polls until `pred(&spans)` holds or `timeout` passes; returns the spans either way, so
    /// the caller's assertion shows what did arrive.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if pred(&spans) || Instant::now() >= deadline {
                return spans;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// How many export requests arrived, including refused ones.
    pub fn requests(&self) -> usize {
        self.store.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A collector that hangs: it accepts TCP connections and reads whatever arrives, but never
/// writes and never closes while it lives, so an exporter's handshake or request never completes.
pub struct Hung {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    connections: Arc<AtomicUsize>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Hung {
    pub fn start() -> Hung {
        let (listener, addr) = bind(IpAddr::from([127, 0, 0, 1]));
        let connections = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, keep, stopping) = (connections.clone(), open.clone(), stop.clone());
        // The listener is non-blocking so the accept loop can notice `stop`.
        let thread = std::thread::Builder::new()
            .name("otlp-hung".into())
            .spawn(move || {
                while !stopping.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            count.fetch_add(1, Ordering::SeqCst);
                            stream.set_nonblocking(false).unwrap();
                            keep.lock().unwrap().push(stream.try_clone().unwrap());
                            std::thread::spawn(move || drain(stream));
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(10)),
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
            .unwrap();
        Hung {
            endpoint: format!("http://{addr}"),
            connections,
            open,
            stop,
            thread: Some(thread),
        }
    }

    /// How many connections were accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Reads and discards until the peer closes or the socket is shut down.
fn drain(mut stream: TcpStream) {
    let mut buf = [0u8; 4096];
    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
}

impl Drop for Hung {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
