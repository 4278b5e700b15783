//! Client mode: many long-lived connections, each streaming numbered requests
//! and checking every reply (see [`crate::tracker`]).

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::protocol::{self, FrameError};
use crate::report::{ConnState, Report};
use crate::tracker::Tracker;

/// How the client runs.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub target: SocketAddr,
    pub conns: usize,
    /// Requests per second per connection; 0 = as fast as replies come.
    pub rate: f64,
    /// Send on schedule without waiting for replies (requests keep leaving while replies
    /// are held up, as a streaming client's do); needs `rate` > 0.
    pub pipeline: bool,
    pub payload: usize,
    pub connect_timeout: Duration,
}

/// A running client: its connections' trackers and a stop switch.
pub struct Client {
    started: Instant,
    trackers: Arc<Vec<Mutex<Tracker>>>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn lock(t: &Mutex<Tracker>) -> std::sync::MutexGuard<'_, Tracker> {
    // A panicking connection task must not hide the other connections' figures.
    t.lock().unwrap_or_else(|p| p.into_inner())
}

impl Client {
    /// Opens all connections and starts streaming.
    pub fn start(opts: ClientOptions) -> Client {
        let started = Instant::now();
        let trackers: Arc<Vec<Mutex<Tracker>>> = Arc::new(
            (0..opts.conns)
                .map(|i| Mutex::new(Tracker::new(i, i as u32 ^ 0x5a5a, opts.payload, started)))
                .collect(),
        );
        let (stop, stop_rx) = watch::channel(false);
        let connecting = Arc::new(tokio::sync::Semaphore::new(CONNECTS_IN_FLIGHT));
        let tasks = (0..opts.conns)
            .map(|i| {
                let trackers = trackers.clone();
                let opts = opts.clone();
                let stop_rx = stop_rx.clone();
                let connecting = connecting.clone();
                tokio::spawn(
                    async move { connection(i, opts, trackers, stop_rx, connecting).await },
                )
            })
            .collect();
        Client {
            started,
            trackers,
            stop,
            tasks,
        }
    }

    /// True when every connection has ended on its own.
    pub fn all_ended(&self) -> bool {
        self.tasks.iter().all(|t| t.is_finished())
    }

    /// A report of the current state.
    pub fn report(&self, is_final: bool) -> Report {
        let now = Instant::now();
        let conns = self.trackers.iter().map(|t| lock(t).report(now)).collect();
        Report::new(
            is_final,
            now.duration_since(self.started).as_millis() as u64,
            conns,
        )
    }

    /// Stops all connections and returns the final report.
    pub async fn finish(self) -> Report {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            // Tasks stop at their next await point; give them a moment.
            let deadline = Instant::now() + Duration::from_secs(5);
            while !t.is_finished() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        for t in &self.tasks {
            t.abort();
        }
        self.report(true)
    }
}

fn classify(e: &std::io::Error) -> ConnState {
    match e.kind() {
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted => {
            ConnState::Reset
        }
        ErrorKind::UnexpectedEof => ConnState::ClosedByPeer,
        _ => ConnState::Failed,
    }
}

enum Step {
    Continue,
    Stop,
    End(ConnState, String),
}

/// Connections being opened at once. Thousands of SYNs in one burst overflow the server's
/// listen backlog (1024 for a tokio listener) and its SYN queue, and the kernel answers with
/// SYN cookies and resets that have nothing to do with what is being measured; a client
/// population opens its connections over time.
const CONNECTS_IN_FLIGHT: usize = 128;

async fn connection(
    i: usize,
    opts: ClientOptions,
    trackers: Arc<Vec<Mutex<Tracker>>>,
    mut stop: watch::Receiver<bool>,
    connecting: Arc<tokio::sync::Semaphore>,
) {
    let tracker = &trackers[i];
    let Ok(permit) = connecting.acquire_owned().await else {
        return;
    };
    let connect = tokio::time::timeout(opts.connect_timeout, TcpStream::connect(opts.target));
    let mut stream = tokio::select! {
        _ = stop.changed() => return,
        r = connect => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                lock(tracker).on_end(ConnState::ConnectFailed, Some(format!("connect: {e}")), Instant::now());
                return;
            }
            Err(_) => {
                lock(tracker).on_end(ConnState::ConnectFailed, Some("connect: timed out".into()), Instant::now());
                return;
            }
        }
    };
    drop(permit);
    let _ = stream.set_nodelay(true);
    let local = stream
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    lock(tracker).on_connected(local, opts.target.to_string(), Instant::now());
    if opts.pipeline && opts.rate > 0.0 {
        return pipelined(
            stream,
            Duration::from_secs_f64(1.0 / opts.rate),
            tracker,
            stop,
        )
        .await;
    }
    let interval = (opts.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / opts.rate));
    let mut next_send = Instant::now();
    loop {
        let step = tokio::select! {
            _ = stop.changed() => Step::Stop,
            s = exchange(&mut stream, tracker) => s,
        };
        match step {
            Step::Continue => {}
            Step::Stop => {
                lock(tracker).on_end(ConnState::Done, None, Instant::now());
                return;
            }
            Step::End(state, msg) => {
                lock(tracker).on_end(state, Some(msg), Instant::now());
                return;
            }
        }
        if let Some(iv) = interval {
            next_send += iv;
            let now = Instant::now();
            if next_send > now {
                tokio::select! {
                    _ = stop.changed() => {
                        lock(tracker).on_end(ConnState::Done, None, Instant::now());
                        return;
                    }
                    _ = tokio::time::sleep(next_send - now) => {}
                }
            } else {
                next_send = now;
            }
        }
    }
}

/// Pipelined: one request every `interval` from the writer, every reply read as it comes.
async fn pipelined(
    stream: TcpStream,
    interval: Duration,
    tracker: &Mutex<Tracker>,
    mut stop: watch::Receiver<bool>,
) {
    let (mut rd, mut wr) = stream.into_split();
    let writer = async {
        let mut next = tokio::time::Instant::now();
        loop {
            let (_, frame) = lock(tracker).next_request(Instant::now());
            if let Err(e) = wr.write_all(&frame).await {
                return (classify(&e), format!("write: {e}"));
            }
            next += interval;
            tokio::time::sleep_until(next).await;
        }
    };
    let reader = async {
        loop {
            if let Step::End(state, msg) = read_reply(&mut rd, tracker).await {
                return (state, msg);
            }
        }
    };
    let (state, msg) = tokio::select! {
        _ = stop.changed() => (ConnState::Done, String::new()),
        r = writer => r,
        r = reader => r,
    };
    let error = (state != ConnState::Done).then_some(msg);
    lock(tracker).on_end(state, error, Instant::now());
}

/// Sends one request and reads one reply.
async fn exchange(stream: &mut TcpStream, tracker: &Mutex<Tracker>) -> Step {
    let (_, frame) = lock(tracker).next_request(Instant::now());
    if let Err(e) = stream.write_all(&frame).await {
        return Step::End(classify(&e), format!("write: {e}"));
    }
    read_reply(stream, tracker).await
}

/// Reads one reply and records it.
async fn read_reply<R: AsyncReadExt + Unpin>(stream: &mut R, tracker: &Mutex<Tracker>) -> Step {
    let mut header = [0u8; protocol::REPLY_HEADER_LEN];
    if let Err(e) = stream.read_exact(&mut header).await {
        return Step::End(classify(&e), format!("read: {e}"));
    }
    let h = match protocol::decode_reply_header(&header) {
        Ok(h) => h,
        Err(e @ (FrameError::BadMagic(_) | FrameError::TooLong(_))) => {
            return Step::End(ConnState::Failed, format!("protocol: {e}"))
        }
    };
    let mut payload = vec![0u8; h.len as usize];
    if let Err(e) = stream.read_exact(&mut payload).await {
        return Step::End(classify(&e), format!("read: {e}"));
    }
    lock(tracker).on_reply(&h, &payload, Instant::now());
    Step::Continue
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{self, ServerOptions};

    async fn server(stateful: bool) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        tokio::spawn(server::run(
            ServerOptions {
                listen: addr,
                stateful,
                touch_mib: 0,
            },
            std::future::pending(),
        ));
        for _ in 0..100 {
            if TcpStream::connect(addr).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        addr
    }

    #[tokio::test]
    async fn client_and_server_agree_over_loopback() {
        let addr = server(true).await;
        let client = Client::start(ClientOptions {
            target: addr,
            conns: 8,
            rate: 200.0,
            pipeline: false,
            payload: 64,
            connect_timeout: Duration::from_secs(2),
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let interim = client.report(false);
        assert!(!interim.r#final);
        let r = client.finish().await;
        assert!(r.r#final);
        assert_eq!(r.totals.connections, 8);
        assert_eq!(r.totals.clean, 8, "{}", r.human());
        assert!(r.totals.requests_done >= 8 * 10, "{}", r.human());
        assert_eq!(r.totals.resets, 0);
        for c in &r.connections {
            assert_eq!(c.state, ConnState::Done);
            // Ping-pong: at most the request in flight at stop is unanswered.
            assert!(c.requests_sent - c.requests_done <= 1, "{c:?}");
        }
    }

    #[tokio::test]
    async fn a_pipelined_client_keeps_sending_on_schedule_and_checks_every_reply() {
        let addr = server(true).await;
        let client = Client::start(ClientOptions {
            target: addr,
            conns: 4,
            rate: 100.0,
            pipeline: true,
            payload: 32,
            connect_timeout: Duration::from_secs(2),
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = client.finish().await;
        assert_eq!(r.totals.connections, 4);
        assert_eq!(r.totals.clean, 4, "{}", r.human());
        for c in &r.connections {
            assert_eq!(c.state, ConnState::Done, "{c:?}");
            assert!(c.requests_done >= 10, "{c:?}");
            assert_eq!(
                c.lost_bytes + c.duplicated_bytes + c.corrupt_replies,
                0,
                "{c:?}"
            );
        }
    }

    #[tokio::test]
    async fn refused_connections_are_reported() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let client = Client::start(ClientOptions {
            target: addr,
            conns: 2,
            rate: 0.0,
            pipeline: false,
            payload: 8,
            connect_timeout: Duration::from_secs(2),
        });
        for _ in 0..200 {
            if client.all_ended() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let r = client.finish().await;
        assert_eq!(r.totals.failed, 2, "{}", r.human());
        assert_eq!(r.totals.clean, 0);
        assert_eq!(r.connections[0].state, ConnState::ConnectFailed);
    }

    #[tokio::test]
    async fn server_closing_midway_is_seen_as_closed_or_reset() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            // Answer nothing; read one request and hang up.
            let mut buf = [0u8; 16];
            let _ = s.read(&mut buf).await;
            drop(s);
        });
        let client = Client::start(ClientOptions {
            target: addr,
            conns: 1,
            rate: 0.0,
            pipeline: false,
            payload: 8,
            connect_timeout: Duration::from_secs(2),
        });
        for _ in 0..200 {
            if client.all_ended() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let r = client.finish().await;
        let c = &r.connections[0];
        assert!(
            matches!(c.state, ConnState::ClosedByPeer | ConnState::Reset),
            "{c:?}"
        );
        assert!(!c.is_clean());
    }
}
