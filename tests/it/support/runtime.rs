//! An emulator of the AWS Lambda Runtime API
//! (<https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html>) driving the real
//! `bootstrap` binary as a child process, so tests exercise exactly what Lambda runs: the
//! runtime loop, env handling, logging, error reporting and process lifetime.
//!
//! Like the Managed Instances Runtime API, it serves every `/next` long poll the function
//! keeps open: with several invocations queued ([`LambdaProcess::submit`]) and several polls
//! open, each poll gets one, so the function has as many in flight as it asks for. It counts
//! the invocations handed out and not yet answered, lets a test wait for a number of them
//! ([`LambdaProcess::wait_in_flight`]), and keeps the most there ever were
//! ([`LambdaProcess::max_in_flight`]).

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::loopback::Loopback;

/// Lambda's limit on a synchronous response payload; larger responses fail the invocation.
const MAX_RESPONSE_BYTES: usize = 6 * 1024 * 1024;
const PREFIX: &str = "/2018-06-01/runtime";

/// Outcome of one invocation, as Lambda would report it to the caller.
#[derive(Clone, Debug, PartialEq)]
pub enum Invocation {
    Response(Value),
    Error {
        error_type: String,
        error_message: String,
        /// `Lambda-Runtime-Function-Error-Type` header of the error POST (`unhandled` from
        /// lambda_runtime).
        header_error_type: Option<String>,
    },
}

impl Invocation {
    /// The response payload; panics (showing the error) otherwise.
    pub fn unwrap_response(self) -> Value {
        match self {
            Invocation::Response(v) => v,
            other => panic!("expected a response, got {other:?}"),
        }
    }
}

struct Queued {
    id: String,
    body: Vec<u8>,
    deadline_ms: u128,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Queued>,
    /// When each event was handed to the function (answer of `/next`).
    started: HashMap<String, Instant>,
    done: HashMap<String, (Invocation, Duration)>,
    init_error: Option<(String, String)>,
    stopping: bool,
    /// Invocations handed out by `/next` and not answered yet, and the most at any moment.
    in_flight: usize,
    max_in_flight: usize,
}

/// An invocation queued by [`LambdaProcess::submit`], to collect with [`LambdaProcess::wait`].
#[derive(Debug, Clone)]
pub struct Pending {
    id: String,
    timeout_ms: u64,
}

impl Pending {
    /// Its request id (as in the function's log lines).
    pub fn id(&self) -> &str {
        &self.id
    }
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
    /// Waits until `f` returns `Some` or `timeout` elapses, re-checking at least every 100 ms so
    /// callers can also watch things the condvar is not told about (child exit).
    fn wait_for<T>(
        &self,
        timeout: Duration,
        mut f: impl FnMut(&mut State) -> Option<T>,
    ) -> Option<T> {
        let end = Instant::now() + timeout;
        let mut st = self.lock();
        loop {
            if let Some(v) = f(&mut st) {
                return Some(v);
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            st = self
                .changed
                .wait_timeout(st, left.min(Duration::from_millis(100)))
                .unwrap()
                .0;
        }
    }
}

/// The `bootstrap` binary running against a private Runtime API endpoint.
pub struct LambdaProcess {
    child: Mutex<Child>,
    pid: u32,
    shared: Arc<Shared>,
    /// The Runtime API's server; it stops when the process is dropped.
    _server: Loopback,
    api: String,
    logs: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
    next_id: AtomicU64,
    threads: Vec<JoinHandle<()>>,
}

impl LambdaProcess {
    /// Starts the emulator and `bootstrap` with Lambda's environment plus `env` (which wins).
    pub fn spawn(env: &[(String, String)]) -> LambdaProcess {
        Self::spawn_with(env, &[])
    }

    /// Like `spawn`, but first removes the named variables from the defaults (e.g. to check
    /// start-up without `AWS_LAMBDA_RUNTIME_API`). The child gets a clean environment, as on
    /// Lambda: only `PATH`, `RUST_BACKTRACE` (if set here), the Lambda defaults and `env`.
    pub fn spawn_with(env: &[(String, String)], remove: &[&str]) -> LambdaProcess {
        Self::spawn_program(env!("CARGO_BIN_EXE_bootstrap").as_ref(), env, remove)
    }

    /// Like `spawn_with` for another executable (e.g. a stand-in Lambda function).
    pub fn spawn_program(
        bin: &std::path::Path,
        env: &[(String, String)],
        remove: &[&str],
    ) -> LambdaProcess {
        let shared = Arc::new(Shared::default());
        // hyper with a task per connection (see `loopback`) and a blocking thread per request:
        // however many `/next` polls the function keeps open, each is answered.
        let server = {
            let shared = shared.clone();
            Loopback::start("Runtime API", move || {
                let shared = shared.clone();
                hyper::service::service_fn(move |rq| answer(rq, shared.clone()))
            })
        };
        let api = server.addr.to_string();

        let task_root = bin.parent().unwrap().to_string_lossy().into_owned();
        let mut vars: Vec<(String, String)> = [
            ("AWS_LAMBDA_RUNTIME_API", api.as_str()),
            ("AWS_LAMBDA_FUNCTION_NAME", "tilepredict-test"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "3008"),
            ("AWS_REGION", "us-east-1"),
            ("_HANDLER", "bootstrap"),
            ("LAMBDA_TASK_ROOT", task_root.as_str()),
            ("RUST_LOG", "info"),
        ]
        .iter()
        .filter(|(k, _)| !remove.contains(k))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for key in ["PATH", "RUST_BACKTRACE"] {
            if let Ok(v) = std::env::var(key) {
                vars.push((key.into(), v));
            }
        }
        vars.extend(env.iter().cloned()); // later entries win in Command::envs

        let mut child = Command::new(bin)
            .env_clear()
            .envs(vars)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let logs = Arc::new(Mutex::new(String::new()));
        let stdout = Arc::new(Mutex::new(String::new()));
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
        let mut threads = Vec::new();
        for (pipe, only) in [(out, Some(stdout.clone())), (err, None)] {
            let logs = logs.clone();
            threads.push(std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Some(only) = &only {
                        let mut o = only.lock().unwrap();
                        o.push_str(&line);
                        o.push('\n');
                    }
                    let mut l = logs.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            }));
        }
        let pid = child.id();
        LambdaProcess {
            child: Mutex::new(child),
            pid,
            shared,
            _server: server,
            api,
            logs,
            stdout,
            next_id: AtomicU64::new(1),
            threads,
        }
    }

    /// Runs one invocation and returns its outcome. Panics (with the child's logs) if the
    /// child exits first or does not answer within `timeout_ms` + 30 s.
    pub fn invoke(&self, event: &Value, timeout_ms: u64) -> Invocation {
        self.invoke_timed(event, timeout_ms).0
    }

    /// Like `invoke`, also returning the function's duration: from `/next` handing over the
    /// event until the answer arrives (what Lambda bills; excludes waiting for the child to
    /// finish init and ask for work).
    pub fn invoke_timed(&self, event: &Value, timeout_ms: u64) -> (Invocation, Duration) {
        self.invoke_raw_timed(serde_json::to_vec(event).unwrap(), timeout_ms)
    }

    /// Like `invoke_timed` with the payload's bytes as given (e.g. not JSON at all).
    pub fn invoke_raw_timed(&self, body: Vec<u8>, timeout_ms: u64) -> (Invocation, Duration) {
        let pending = self.submit_raw(body, timeout_ms);
        self.wait(&pending)
    }

    /// Queues one invocation (deadline `timeout_ms` from now) without waiting for its answer.
    pub fn submit(&self, event: &Value, timeout_ms: u64) -> Pending {
        self.submit_raw(serde_json::to_vec(event).unwrap(), timeout_ms)
    }

    /// [`LambdaProcess::submit`] with the payload's bytes as given.
    pub fn submit_raw(&self, body: Vec<u8>, timeout_ms: u64) -> Pending {
        let id = Self::request_id(self.pid, self.next_id.fetch_add(1, Ordering::SeqCst));
        let deadline_ms = epoch_ms() + u128::from(timeout_ms);
        self.shared.lock().queue.push_back(Queued {
            id: id.clone(),
            body,
            deadline_ms,
        });
        self.shared.changed.notify_all();
        Pending { id, timeout_ms }
    }

    /// Queues every event at once, then collects the answers, in the events' order.
    pub fn invoke_all(&self, events: &[Value], timeout_ms: u64) -> Vec<Invocation> {
        let pending: Vec<Pending> = events.iter().map(|e| self.submit(e, timeout_ms)).collect();
        pending.iter().map(|p| self.wait(p).0).collect()
    }

    /// The most invocations the function ever had in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared.lock().max_in_flight
    }

    /// Waits until the function has `n` invocations in flight; false after `timeout`.
    pub fn wait_in_flight(&self, n: usize, timeout: Duration) -> bool {
        self.shared
            .wait_for(timeout, |st| (st.in_flight >= n).then_some(()))
            .is_some()
    }

    /// The answer to a submitted invocation and the function's duration (see `invoke_timed`).
    /// Panics (with the child's logs) if the child exits first or does not answer within its
    /// timeout + 30 s.
    pub fn wait(&self, pending: &Pending) -> (Invocation, Duration) {
        let id = pending.id.clone();
        let limit = Duration::from_millis(pending.timeout_ms) + Duration::from_secs(30);
        // After the child exits, allow a moment for an answer it sent just before exiting.
        let mut exited: Option<(ExitStatus, Instant)> = None;
        let got = self.shared.wait_for(limit, |st| {
            if let Some(r) = st.done.remove(&id) {
                return Some(Ok(r));
            }
            if exited.is_none() {
                exited = self
                    .child
                    .lock()
                    .unwrap()
                    .try_wait()
                    .unwrap()
                    .map(|s| (s, Instant::now()));
            }
            let (status, at) = exited?;
            (at.elapsed() > Duration::from_millis(300)).then_some(Err(status))
        });
        match got {
            Some(Ok(r)) => r,
            Some(Err(status)) => panic!(
                "bootstrap exited ({status}) before answering invocation {id}; logs:\n{}",
                self.logs()
            ),
            None => panic!(
                "no answer to invocation {id} within {limit:?}; logs:\n{}",
                self.logs()
            ),
        }
    }

    /// The request id of the `n`th invocation (from 1) of the process `pid`.
    pub fn request_id(pid: u32, n: u64) -> String {
        format!("{pid:08x}-0000-4000-8000-{n:012x}")
    }

    /// The request ids handed out so far, in order.
    pub fn request_ids(&self) -> Vec<String> {
        (1..self.next_id.load(Ordering::SeqCst))
            .map(|n| Self::request_id(self.pid, n))
            .collect()
    }

    /// Waits for the child to report `POST /runtime/init/error`: `(errorType, errorMessage)`.
    /// lambda_runtime 1.5 posts this only for SnapStart hook failures; a function that fails
    /// its own init must post it itself (or just exit: see `wait_exit` and `logs`).
    pub fn wait_init_error(&self, timeout: Duration) -> Option<(String, String)> {
        self.shared.wait_for(timeout, |st| st.init_error.clone())
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.get_mut().unwrap().try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the child wrote to stdout and stderr so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// The child's logs once they contain `needle` (or after 10 s, for the caller's assertion
    /// to show what came). Its stderr is read by another thread, which may lag behind an answer
    /// on a busy machine.
    pub fn logs_containing(&self, needle: &str) -> String {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let logs = self.logs();
            if logs.contains(needle) || Instant::now() > end {
                return logs;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the child wrote to stdout only (where CloudWatch EMF lines belong).
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// `host:port` of the emulated Runtime API.
    pub fn api_addr(&self) -> &str {
        &self.api
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Peak resident memory of the child (VmHWM), in kB; `None` once it has exited.
    pub fn peak_rss_kb(&self) -> Option<u64> {
        self.proc_status("VmHWM:")
    }

    /// Current resident memory of the child (VmRSS), in kB; `None` once it has exited.
    pub fn rss_kb(&self) -> Option<u64> {
        self.proc_status("VmRSS:")
    }

    fn proc_status(&self, field: &str) -> Option<u64> {
        let status = self.proc_file("status")?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        line[field.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    }

    /// `/proc/PID/<name>` of the child while it runs; `None` once it has exited.
    pub fn proc_file(&self, name: &str) -> Option<String> {
        // Once reaped, the pid may belong to another process.
        if self.child.lock().unwrap().try_wait().ok()?.is_some() {
            return None;
        }
        std::fs::read_to_string(format!("/proc/{}/{name}", self.pid)).ok()
    }
}

impl Drop for LambdaProcess {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap();
        let _ = child.kill();
        let _ = child.wait();
        self.shared.lock().stopping = true;
        self.shared.changed.notify_all(); // releases long polls; `server` stops after this
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn epoch_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// One reply of the emulated API.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn json(status: u16, v: Value) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: serde_json::to_vec(&v).unwrap(),
        }
    }
}

async fn answer(
    rq: hyper::Request<hyper::body::Incoming>,
    shared: Arc<Shared>,
) -> Result<hyper::Response<http_body_util::Full<bytes::Bytes>>, std::convert::Infallible> {
    use http_body_util::BodyExt;
    let method = rq.method().clone();
    let url = rq.uri().path().to_string();
    let headers: Vec<(String, String)> = rq
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = rq
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let reply = tokio::task::spawn_blocking(move || handle(&method, &url, &headers, body, &shared))
        .await
        .expect("the Runtime API handler panicked");
    // Always Content-Length (a Full body).
    let mut out = hyper::Response::builder().status(reply.status);
    for (k, v) in reply.headers {
        out = out.header(k, v);
    }
    Ok(out
        .body(http_body_util::Full::new(bytes::Bytes::from(reply.body)))
        .expect("a valid response"))
}

/// Answers one Runtime API request (on a blocking thread, since `/next` waits).
fn handle(
    method: &hyper::Method,
    url: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
    shared: &Shared,
) -> Reply {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let path = url.strip_prefix(PREFIX).unwrap_or("");
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let accepted = || Reply::json(202, serde_json::json!({"status": "OK"}));
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["invocation", "next"]) => {
            let next = shared.wait_for(Duration::from_secs(86_400), |st| {
                if st.stopping {
                    return Some(None);
                }
                let q = st.queue.pop_front()?;
                st.started.insert(q.id.clone(), Instant::now());
                st.in_flight += 1;
                st.max_in_flight = st.max_in_flight.max(st.in_flight);
                Some(Some(q))
            });
            let Some(Some(q)) = next else {
                return Reply::json(
                    503,
                    serde_json::json!({"errorType": "Stopping", "errorMessage": "the emulator is stopping"}),
                );
            };
            let headers = [
                ("Content-Type", "application/json".to_string()),
                ("Lambda-Runtime-Aws-Request-Id", q.id.clone()),
                ("Lambda-Runtime-Deadline-Ms", q.deadline_ms.to_string()),
                (
                    "Lambda-Runtime-Invoked-Function-Arn",
                    "arn:aws:lambda:us-east-1:123456789012:function:tilepredict-test".into(),
                ),
                (
                    "Lambda-Runtime-Trace-Id",
                    format!("Root=1-00000000-{:024x};Sampled=0", q.deadline_ms),
                ),
            ];
            Reply {
                status: 200,
                headers: headers
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
                body: q.body,
            }
        }
        ("POST", ["invocation", id, kind @ ("response" | "error")]) => {
            let mut st = shared.lock();
            let Some(t0) = st.started.remove(*id) else {
                drop(st);
                let msg = format!("unknown or already answered request id {id}");
                return Reply::json(
                    400,
                    serde_json::json!({"errorType": "InvalidRequestID", "errorMessage": msg}),
                );
            };
            let (outcome, reply) = if *kind == "response" && body.len() > MAX_RESPONSE_BYTES {
                let msg = format!(
                    "Response payload size ({} bytes) exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes).",
                    body.len()
                );
                let err = Invocation::Error {
                    error_type: "Function.ResponseSizeTooLarge".into(),
                    error_message: msg.clone(),
                    header_error_type: None,
                };
                (
                    err,
                    Reply::json(
                        413,
                        serde_json::json!({"errorType": "RequestEntityTooLarge", "errorMessage": msg}),
                    ),
                )
            } else if *kind == "response" {
                let v = serde_json::from_slice(&body)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
                (Invocation::Response(v), accepted())
            } else {
                let (error_type, error_message) = parse_error(&body);
                let header_error_type = header("Lambda-Runtime-Function-Error-Type");
                (
                    Invocation::Error {
                        error_type,
                        error_message,
                        header_error_type,
                    },
                    accepted(),
                )
            };
            st.in_flight -= 1;
            st.done.insert(id.to_string(), (outcome, t0.elapsed()));
            drop(st);
            shared.changed.notify_all();
            reply
        }
        ("POST", ["init", "error"]) => {
            shared.lock().init_error = Some(parse_error(&body));
            shared.changed.notify_all();
            accepted()
        }
        _ => Reply::json(
            404,
            serde_json::json!({"errorType": "NotFound", "errorMessage": url}),
        ),
    }
}

/// `{"errorType","errorMessage"}`; an unparseable body becomes the message.
fn parse_error(body: &[u8]) -> (String, String) {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    match (field("errorType"), field("errorMessage")) {
        (None, None) => (String::new(), String::from_utf8_lossy(body).into_owned()),
        (t, m) => (t.unwrap_or_default(), m.unwrap_or_default()),
    }
}
