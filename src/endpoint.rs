//! The endpoint: actix-web wiring of the whole server.
//!
//! Owns the HTTP routes (socket mounts, `/health`, the static page), the shared
//! services every connection uses, and the server's life: bind, run, and on SIGINT or
//! SIGTERM stop accepting, close every socket with 1001 and exit. Must not know any
//! topic: the application's router does.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use std::net::ToSocketAddrs;
use std::rc::Rc;
use std::time::Duration;

use actix_http::HttpService;
use actix_server::ServerHandle;
use actix_service::{fn_factory, fn_service, map_config, ServiceFactory};
use actix_web::dev::AppConfig;
use actix_web::rt::net::TcpStream;
use actix_web::{web, App, HttpResponse};
use socket2::{Domain, Type};

use crate::config::Config;
use crate::pubsub::PubSub;
use crate::registry::Sessions;
use crate::router::Router;
use crate::socket::Socket;
use crate::transport::longpoll::{self, LongPollSessions};
use crate::transport::{listener, websocket};

/// What the application builds its channels and stores on.
#[derive(Clone, Default)]
pub struct Services {
    pub pubsub: PubSub,
    pub sessions: Sessions,
}

/// The application: who may connect, and which channel serves which topic.
pub struct SocketHandler {
    socket: Arc<dyn Socket>,
    router: Router,
}

impl SocketHandler {
    pub fn new(socket: impl Socket, router: Router) -> Self {
        SocketHandler {
            socket: Arc::new(socket),
            router,
        }
    }
}

/// Everything a connection shares with all others.
pub(crate) struct Shared {
    pub config: Config,
    pub socket: Arc<dyn Socket>,
    pub router: Router,
    pub pubsub: PubSub,
    pub sessions: Sessions,
    pub longpoll: Arc<LongPollSessions>,
    /// Socket mounts, e.g. `/socket`.
    pub mounts: Vec<String>,
    /// The test echo's path, if served.
    pub echo_path: Option<String>,
}

impl Shared {
    /// Who serves a WebSocket upgrade to `path`, if anyone.
    pub(crate) fn websocket_target(&self, path: &str) -> Option<websocket::Target> {
        if self.echo_path.as_deref() == Some(path) {
            return Some(websocket::Target::Echo);
        }
        let socket = path
            .strip_suffix("/websocket")
            .is_some_and(|mount| self.mounts.iter().any(|m| m == mount));
        (socket && self.config.transports.websocket).then_some(websocket::Target::Socket)
    }
}

type BuildApp = Box<dyn FnOnce(&Services) -> SocketHandler + Send>;

/// A configured server, not yet running.
pub struct Endpoint {
    config: Config,
    mounts: Vec<String>,
    build: BuildApp,
    echo_path: Option<String>,
}

/// A server running on its own thread (for tests and embedding).
pub struct RunningServer {
    addr: SocketAddr,
    handle: ServerHandle,
    services: Services,
    longpoll: Arc<LongPollSessions>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Endpoint {
    /// `build` makes the application inside the server's runtime, so it may start
    /// actors (stores) there.
    pub fn new(
        config: Config,
        build: impl FnOnce(&Services) -> SocketHandler + Send + 'static,
    ) -> Self {
        Endpoint {
            config,
            mounts: Vec::new(),
            build: Box::new(build),
            echo_path: None,
        }
    }

    /// Serves the socket at `path`: `{path}/websocket` and `{path}/longpoll`.
    pub fn mount(mut self, path: &str) -> Self {
        self.mounts.push(path.trim_end_matches('/').to_owned());
        self
    }

    /// Serves a WebSocket echo at `path` through the same adapter as the sockets; a
    /// test target for the WebSocket layer (Autobahn), never mounted by default.
    #[cfg(feature = "echo-endpoint")]
    pub fn echo(mut self, path: &str) -> Self {
        self.echo_path = Some(path.to_owned());
        self
    }

    /// Runs until SIGINT or SIGTERM, then shuts down gracefully.
    pub fn run(self) -> io::Result<()> {
        let shutdown_timeout = self.config.shutdown_timeout();
        actix_web::rt::System::new().block_on(async move {
            let Bound {
                server,
                services,
                addrs,
                ..
            } = self.bind()?;
            for addr in addrs {
                log::info!("fluxwire listening on http://{addr}");
            }
            let handle = server.handle();
            watch_signals(handle, services.sessions, shutdown_timeout);
            crate::heap::trim_periodically();
            server.await
        })
    }

    /// Starts the server on a thread of its own; returns once it is listening.
    pub fn spawn(self) -> io::Result<RunningServer> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let bound = match self.bind() {
                    Ok(bound) => bound,
                    Err(error) => {
                        let message = error.to_string();
                        let _ = ready_tx.send(Err(error));
                        return Err(io::Error::other(message));
                    }
                };
                let ready = (
                    bound.addrs[0],
                    bound.server.handle(),
                    bound.services,
                    bound.longpoll,
                );
                let _ = ready_tx.send(Ok(ready));
                bound.server.await
            })
        });
        let (addr, handle, services, longpoll) = ready_rx
            .recv()
            .map_err(|_| io::Error::other("server thread ended before listening"))??;
        Ok(RunningServer {
            addr,
            handle,
            services,
            longpoll,
            thread: Some(thread),
        })
    }

    fn bind(self) -> io::Result<Bound> {
        let services = Services::default();
        let SocketHandler { socket, router } = (self.build)(&services);
        let config = self.config;
        let static_dir = config.static_dir.clone();
        if !static_dir.is_dir() {
            log::warn!(
                "static directory {} not found: the demo page is not served",
                static_dir.display()
            );
        }
        let workers = config
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let shutdown_secs = config.shutdown_timeout().as_secs().max(1);
        let bind_to = (config.host.clone(), config.port);
        let transports = config.transports;
        let longpoll_sessions = Arc::new(LongPollSessions::new(&config));
        let shared = Arc::new(Shared {
            config,
            socket,
            router,
            pubsub: services.pubsub.clone(),
            sessions: services.sessions.clone(),
            longpoll: longpoll_sessions.clone(),
            mounts: self.mounts,
            echo_path: self.echo_path,
        });
        let app_shared = shared.clone();
        let app = move || {
            let shared = app_shared.clone();
            let mut app = App::new()
                .app_data(web::Data::new(shared.clone()))
                .route("/health", web::get().to(health));
            for mount in &shared.mounts {
                // A transport left out of `--transports` answers 404.
                let ws = web::resource(format!("{mount}/websocket"));
                app = app.service(if transports.websocket {
                    ws.to(websocket::not_upgraded)
                } else {
                    ws.to(HttpResponse::NotFound)
                });
                let lp = web::resource(format!("{mount}/longpoll"));
                app = app.service(if transports.longpoll {
                    lp.to(longpoll::serve)
                } else {
                    lp.to(HttpResponse::NotFound)
                });
            }
            if static_dir.is_dir() {
                app =
                    app.service(actix_files::Files::new("/", &static_dir).index_file("index.html"));
            }
            app
        };
        let mut server = actix_server::Server::build()
            .workers(workers)
            .disable_signals()
            .shutdown_timeout(shutdown_secs);
        let mut addrs = Vec::new();
        let resolved = bind_to.to_socket_addrs().map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("cannot resolve --host {}: {error}", bind_to.0),
            )
        })?;
        for addr in resolved {
            let listener = listen(addr).map_err(|error| {
                io::Error::new(error.kind(), format!("cannot listen on {addr}: {error}"))
            })?;
            addrs.push(listener.local_addr()?);
            let (shared, app) = (shared.clone(), app.clone());
            server = server.listen("fluxwire", listener, move || {
                let http = HttpService::<listener::Replayed, _, _>::build()
                    .client_request_timeout(Duration::from_secs(5))
                    .h1(map_config(app(), |_| AppConfig::default()));
                let shared = shared.clone();
                fn_factory(move || {
                    let http = http.new_service(());
                    let shared = shared.clone();
                    async move {
                        let http = Rc::new(http.await.map_err(|error| {
                            log::error!("cannot start the HTTP service: {error:?}")
                        })?);
                        Ok::<_, ()>(fn_service(move |stream: TcpStream| {
                            let (http, shared) = (http.clone(), shared.clone());
                            async move {
                                listener::serve(stream, shared, http).await;
                                Ok::<_, ()>(())
                            }
                        }))
                    }
                })
            })?;
        }
        Ok(Bound {
            server: server.run(),
            services,
            addrs,
            longpoll: longpoll_sessions,
        })
    }
}

/// A listening socket with a backlog deep enough for a reconnect storm (every phoenix.js
/// client comes back within ~10 ms of a restart, PROTOCOL.md §7.3).
fn listen(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// A server bound to its addresses, not yet awaited.
struct Bound {
    server: actix_server::Server,
    services: Services,
    addrs: Vec<SocketAddr>,
    longpoll: Arc<LongPollSessions>,
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// On the first SIGINT or SIGTERM: stop accepting, close every socket with 1001, and
/// let the server finish (bounded by the shutdown timeout).
fn watch_signals(handle: ServerHandle, sessions: Sessions, timeout: Duration) {
    let started = Arc::new(AtomicBool::new(false));
    let shutdown = move |signal: &'static str| {
        let (handle, sessions, started) = (handle.clone(), sessions.clone(), started.clone());
        async move {
            if started.swap(true, Ordering::SeqCst) {
                return;
            }
            handle.pause().await;
            let closed = sessions.close_all("server shutting down");
            log::info!("{signal}: shutting down, closing {closed} connections with 1001");
            let left = sessions.drained(timeout).await;
            if left > 0 {
                log::warn!("{left} connections did not close within {timeout:?}");
            }
            handle.stop(true).await;
        }
    };
    let on_interrupt = shutdown.clone();
    actix_web::rt::spawn(async move {
        if actix_web::rt::signal::ctrl_c().await.is_ok() {
            on_interrupt("SIGINT").await;
        }
    });
    #[cfg(unix)]
    actix_web::rt::spawn(async move {
        use actix_web::rt::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                if terminate.recv().await.is_some() {
                    shutdown("SIGTERM").await;
                }
            }
            Err(error) => log::error!("cannot watch SIGTERM: {error}"),
        }
    });
}

impl RunningServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn services(&self) -> &Services {
        &self.services
    }

    /// Live long-poll sessions (each ends when its client stops polling).
    pub fn longpoll_sessions(&self) -> usize {
        self.longpoll.len()
    }

    /// Stops the server: every socket closed with 1001, then the thread joined.
    pub fn stop(mut self) {
        let sessions = self.services.sessions.clone();
        sessions.close_all("server shutting down");
        let handle = self.handle.clone();
        let stopper = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                sessions.drained(Duration::from_secs(2)).await;
                handle.stop(true).await;
            });
        });
        let _ = stopper.join();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
