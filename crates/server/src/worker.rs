//! The engine thread: owns the `BatchEngine`, takes submissions and cancellations from the
//! HTTP handlers over a channel, steps while anything is active, and routes each request's
//! events to its handler. A handler that went away (client disconnected) gets its request
//! cancelled, which frees its KV blocks at the next step.

use kiln_engine::{BatchEngine, BatchStats, EngineError, Event, Request, RequestId};
use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// A request for the engine thread.
pub enum Command {
    Submit {
        req: Request,
        events: mpsc::UnboundedSender<Event>,
        reply: oneshot::Sender<Result<RequestId, EngineError>>,
    },
    Cancel(RequestId),
}

/// Held by the engine thread; clears the flag when the thread ends, by return or by panic.
pub struct Alive(pub Arc<std::sync::atomic::AtomicBool>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

struct Route {
    events: mpsc::UnboundedSender<Event>,
    n: usize,
    finished: usize,
}

/// Runs until every command sender is dropped and the engine is idle. `stats` is refreshed
/// after every step for `/metrics`.
pub fn run(mut be: BatchEngine, rx: Receiver<Command>, stats: Arc<Mutex<BatchStats>>) {
    let start = Instant::now();
    let mut routes: HashMap<RequestId, Route> = HashMap::new();
    let mut wake: Option<Duration> = None;
    let mut open = true;
    loop {
        // Wait for work when idle (or until the queue delay expires); else just drain.
        let first = if be.is_idle() && open {
            match wake {
                Some(w) => {
                    let left = w.saturating_sub(start.elapsed());
                    match rx.recv_timeout(left) {
                        Ok(c) => Some(c),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => {
                            open = false;
                            None
                        }
                    }
                }
                None => match rx.recv() {
                    Ok(c) => Some(c),
                    Err(_) => {
                        open = false;
                        None
                    }
                },
            }
        } else {
            None
        };
        if !open && be.is_idle() {
            return;
        }
        let mut cmds: Vec<Command> = first.into_iter().collect();
        while let Ok(c) = rx.try_recv() {
            cmds.push(c);
        }
        let now = start.elapsed();
        for c in cmds {
            match c {
                Command::Submit { req, events, reply } => {
                    let n = req.n;
                    let r = be.submit(req, now);
                    if let Ok(id) = &r {
                        routes.insert(
                            *id,
                            Route {
                                events,
                                n,
                                finished: 0,
                            },
                        );
                    }
                    let _ = reply.send(r);
                }
                Command::Cancel(id) => {
                    be.cancel(id);
                }
            }
        }
        let out = match be.step(now) {
            Ok(o) => o,
            Err(e) => {
                // A failing forward pass is a bug, not a client error: end every request
                // (their handlers see the channel close) rather than spin on it.
                eprintln!("kiln-server: engine step failed: {e}");
                for id in routes.keys() {
                    be.cancel(*id);
                }
                routes.clear();
                continue;
            }
        };
        wake = out.wake_at;
        // Before any event goes out, so a client that saw its request end sees its blocks
        // freed in `/metrics` too.
        if let Ok(mut s) = stats.lock() {
            *s = be.stats();
        }
        for e in out.events {
            let id = match &e {
                Event::PromptLogprobs { req, .. }
                | Event::Token { req, .. }
                | Event::Finished { req, .. } => *req,
            };
            let finished = matches!(e, Event::Finished { .. });
            let Some(route) = routes.get_mut(&id) else {
                continue;
            };
            if route.events.send(e).is_err() {
                be.cancel(id);
            }
            if finished {
                route.finished += 1;
                if route.finished >= route.n {
                    routes.remove(&id);
                }
            }
        }
    }
}
