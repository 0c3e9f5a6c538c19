//! The endpoint: actix-web wiring of the whole server.
//!
//! Owns the HTTP routes (socket mounts, `/health`, the static page, and `--host-allow`
//! on the paths whose handlers do not check it), the shared services every connection
//! uses, and the server's life: bind, run, and on SIGINT or SIGTERM stop accepting,
//! close every socket with 1001 and exit. Must not know any topic: the application's
//! router does.

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
use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::{self, Next};
use actix_web::rt::net::TcpStream;
use actix_web::{web, App, HttpResponse};
use socket2::{Domain, Type};

mod stores_http;

use crate::close::Close;
use crate::cluster::{self, Engine};
use crate::config::Config;
use crate::pubsub::PubSub;
use crate::rate::Quota;
use crate::registry::Connections;
use crate::router::Router;
use crate::session::SessionShared;
use crate::socket::Socket;
use crate::storage::Storage;
use crate::store::Stores;
use crate::transport::door::{Door, DoorLimits};
use crate::transport::longpoll::{self, LongPoll, LongPollServers};
use crate::transport::{listener, websocket, Mounts, Shared, UnfinishedBudget, WsLimits};

/// What the application builds its channels and stores on.
#[derive(Clone)]
pub struct Services {
    pub pubsub: PubSub,
    pub connections: Connections,
    /// The application's stores, served as `store:NAME` and at `GET /stores/NAME`.
    pub stores: Stores,
    /// The data dir (`--data-dir`), for what the application keeps across restarts.
    pub storage: Option<Storage>,
}

impl Default for Services {
    fn default() -> Self {
        Services::with_storage(None)
    }
}

impl Services {
    pub(crate) fn with_storage(storage: Option<Storage>) -> Self {
        let pubsub = PubSub::new();
        Services {
            stores: Stores::new(&pubsub, storage.clone()),
            pubsub,
            connections: Connections::default(),
            storage,
        }
    }

    /// Writes what waits for the data dir and marks it cleanly closed.
    fn close_storage(&self) {
        if let Some(storage) = &self.storage {
            storage.close();
            log::info!("data dir {} closed", storage.dir().display());
        }
    }
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
    transport: Arc<Shared>,
    shutdown_timeout: Duration,
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
            watch_signals(handle, services.connections.clone(), shutdown_timeout);
            crate::heap::trim_periodically();
            let served = server.await;
            services.close_storage();
            served
        })
    }

    /// Starts the server on a thread of its own; returns once it is listening.
    pub fn spawn(self) -> io::Result<RunningServer> {
        let shutdown_timeout = self.config.shutdown_timeout();
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
                    bound.transport,
                );
                let _ = ready_tx.send(Ok(ready));
                bound.server.await
            })
        });
        let (addr, handle, services, transport) = ready_rx
            .recv()
            .map_err(|_| io::Error::other("server thread ended before listening"))??;
        Ok(RunningServer {
            addr,
            handle,
            services,
            transport,
            shutdown_timeout,
            thread: Some(thread),
        })
    }

    fn bind(self) -> io::Result<Bound> {
        let storage = match &self.config.data_dir {
            Some(dir) => Some(Storage::open(dir).map_err(io::Error::other)?),
            None => None,
        };
        let services = Services::with_storage(storage);
        let SocketHandler { socket, router } = (self.build)(&services);
        let config = self.config;
        // Before the first subscriber, so that pubsub relays every topic from the start.
        let health = web::Data::new(Health {
            cluster: config
                .cluster_config()
                .map(|cluster| cluster::join(cluster, &services.pubsub)),
        });
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
        let shared = Arc::new(transport_shared(
            &config,
            socket,
            router,
            &services,
            Mounts {
                paths: self.mounts,
                websocket: transports.websocket,
                echo: self.echo_path,
            },
        )?);
        let app_shared = shared.clone();
        let stores = services.stores.clone();
        let app = move || {
            let shared = app_shared.clone();
            let mut app = App::new()
                .app_data(web::Data::new(shared.clone()))
                .app_data(health.clone())
                .wrap(middleware::from_fn(check_host))
                .app_data(web::Data::new(stores.clone()))
                .route("/health", web::get().to(health_check))
                .route("/stores/{name}", web::get().to(stores_http::snapshot))
                .route("/stores/{name}", web::head().to(stores_http::snapshot));
            for mount in &shared.mounts.paths {
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
            transport: shared,
        })
    }
}

/// What every connection shares, made from the configuration: admission, the session's
/// services and limits, each transport's settings.
pub(crate) fn transport_shared(
    config: &Config,
    socket: Arc<dyn Socket>,
    router: Router,
    services: &Services,
    mounts: Mounts,
) -> io::Result<Shared> {
    let transports = config.transports;
    let secret = config
        .secret_key_base
        .as_ref()
        .map(|secret| secret.as_bytes());
    if secret.is_none() && transports.longpoll {
        log::warn!(
            "no --secret-key-base (FLUXWIRE_SECRET_KEY_BASE): signing long-poll tokens \
             with a random secret; long-poll sessions will not survive a restart"
        );
    }
    let door = Door::new(DoorLimits {
        per_address: config.max_connections_per_ip,
        rate: config.connection_rate_per_ip,
        burst: config.connection_burst_per_ip,
        exempt: config.ip_limits_exempt.clone(),
        fd_reserve: usize::try_from(config.fd_reserve).unwrap_or(usize::MAX),
    })?;
    Ok(Shared {
        door: Arc::new(door),
        origin: config.check_origin.clone(),
        hosts: config.host_allow.clone().unwrap_or_default(),
        socket,
        sessions: Arc::new(SessionShared {
            router,
            pubsub: services.pubsub.clone(),
            connections: services.connections.clone(),
            max_channels: config.max_channels,
            message_rate: Quota::per_second(
                config.rate_messages_burst,
                config.rate_messages_per_sec,
            ),
            join_rate: Quota::per_second(config.rate_joins_burst, config.rate_joins_per_sec),
        }),
        mounts,
        websocket: WsLimits {
            max_message: config.max_frame_size,
            idle_timeout: config.idle_timeout(),
            max_outbound_frames: config.max_outbound_frames,
            max_outbound_bytes: config.max_outbound_bytes,
            unfinished: UnfinishedBudget::new(config.max_unfinished_bytes),
        },
        longpoll: LongPoll {
            window: config.longpoll_window(),
            timeout: config.longpoll_timeout(),
            max_body: config.max_frame_size,
            body_timeout: config.body_timeout(),
            max_queue_bytes: config.max_outbound_bytes,
            servers: LongPollServers::new(secret),
        },
    })
}

/// A listening socket with a backlog deep enough for a reconnect storm (every phoenix.js
/// client comes back within ~10 ms of a restart, docs/protocol.md §7.3).
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
    transport: Arc<Shared>,
}

/// `--host-allow` for every path but `/health` and the socket mounts' transports (whose
/// admission refuses with its own 403): the page, static files, anything else.
async fn check_host<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let refused = req
        .app_data::<web::Data<Arc<Shared>>>()
        .is_some_and(|shared| {
            let path = req.path();
            let host = req
                .headers()
                .get(header::HOST)
                .map(|v| v.to_str().unwrap_or(""));
            path != "/health" && !shared.mounts.serves(path) && !shared.hosts.allows(host)
        });
    if refused {
        let host = req.headers().get(header::HOST);
        log::info!(
            "{}: {} refused: host {host:?} not in --host-allow",
            crate::transport::peer(req.request()),
            req.path()
        );
        let response = HttpResponse::Forbidden().body("host not allowed\n");
        return Ok(req.into_response(response).map_into_right_body());
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

/// What `/health` reports besides "ok".
struct Health {
    cluster: Option<Arc<dyn Engine>>,
}

/// `{"status": "ok"}`; in a cluster also this node's id and the cluster's state
/// (docs/contract.md, Cluster).
async fn health_check(health: web::Data<Health>) -> HttpResponse {
    let body = match &health.cluster {
        None => serde_json::json!({"status": "ok"}),
        Some(engine) => serde_json::json!({
            "status": "ok",
            "node": engine.node_id(),
            "cluster": engine.status(),
        }),
    };
    HttpResponse::Ok().json(body)
}

/// Stops the server: no new connections, every connection closed with
/// [`Close::SHUTDOWN`], at most `timeout` for them to finish, then the workers stop.
async fn shut_down(why: &str, handle: &ServerHandle, connections: &Connections, timeout: Duration) {
    handle.pause().await;
    let close = Close::SHUTDOWN;
    let closed = connections.close_all(close);
    log::info!("{why}: shutting down, closing {closed} connections with {close}");
    let left = connections.drained(timeout).await;
    if left > 0 {
        log::warn!("{left} connections did not close within {timeout:?}");
    }
    handle.stop(true).await;
}

/// On the first SIGINT or SIGTERM: [`shut_down`].
fn watch_signals(handle: ServerHandle, connections: Connections, timeout: Duration) {
    let started = Arc::new(AtomicBool::new(false));
    let shutdown = move |signal: &'static str| {
        let (handle, connections, started) = (handle.clone(), connections.clone(), started.clone());
        async move {
            if !started.swap(true, Ordering::SeqCst) {
                shut_down(signal, &handle, &connections, timeout).await;
            }
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
        self.transport.longpoll.servers.len()
    }

    /// Stops the server as a signal would (see [`Endpoint::run`]), then joins its thread.
    pub fn stop(mut self) {
        let connections = self.services.connections.clone();
        let (handle, timeout) = (self.handle.clone(), self.shutdown_timeout);
        let stopper = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                shut_down("stop", &handle, &connections, timeout).await;
            });
        });
        let _ = stopper.join();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.services.close_storage();
    }
}
