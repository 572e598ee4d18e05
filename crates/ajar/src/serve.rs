//! `ajar server`: wires the store, the drivers, the core and the API
//! together, and handles signals (SIGHUP reloads, SIGTERM/SIGINT stop).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ajar_api::AppState;
use ajar_config::Config;
use ajar_core::audit::file::AuditFile;
use ajar_core::{Clock, Core, CoreSettings, SystemClock};
use ajar_domain::Target;
use ajar_driver_gateway::ConnectionEvent;
use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

/// The API's listening socket, with a queue as long as the kernel allows
/// (`net.core.somaxconn`): the standard library's 128 dropped SYNs when
/// thousands of clients asked at once, and each dropped client waited a
/// second for its retry.
fn api_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(65_535)?.into_std()
}

/// Sets hyper's header read timeout. It runs from the moment a connection
/// is accepted, and again from each answer until the next request's headers
/// are in, so it also closes keep-alive connections that send nothing more.
/// (hyper applies it only with a timer.)
fn http_timeouts(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    server: &ajar_config::ServerSettings,
) {
    builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(server.http_header_timeout);
    builder.http2().timer(hyper_util::rt::TokioTimer::new());
}

/// Serves `/metrics` alone on `at` (`[server] metrics_listen`), plain HTTP,
/// with the same timeouts and a small connection cap of its own.
async fn metrics_listener(
    at: SocketAddr,
    state: AppState,
    server: &ajar_config::ServerSettings,
) -> anyhow::Result<(axum_server::Handle, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = api_listener(at).with_context(|| {
        format!("cannot listen on {at} (server.metrics_listen); choose a free address such as 127.0.0.1:9464")
    })?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let stats = Arc::new(ajar_api::ConnectionStats::default());
    let acceptor = crate::http_guard::ApiAcceptor::new(METRICS_CONNECTIONS, server.http_idle_timeout, stats);
    let handle = axum_server::Handle::new();
    let mut metrics = axum_server::from_tcp(listener).acceptor(acceptor).handle(handle.clone());
    http_timeouts(metrics.http_builder(), server);
    let app = ajar_api::metrics_router(state).into_make_service_with_connect_info::<SocketAddr>();
    let task = tokio::spawn(async move { metrics.serve(app).await });
    info!(addr = %bound, "/metrics is served on its own listener");
    println!("ajar metrics on http://{bound}/metrics");
    Ok((handle, task))
}

/// The metrics token, read now so that a missing one stops the start.
fn read_metrics_token(secret: &ajar_config::SecretRef) -> anyhow::Result<String> {
    let token = match secret {
        ajar_config::SecretRef::File(path) => std::fs::read_to_string(path)
            .map(|t| t.trim_end_matches(['\n', '\r']).to_owned())
            .with_context(|| format!("cannot read the metrics token from {} (server.metrics_token_file)", path.display()))?,
        ajar_config::SecretRef::Env(var) => std::env::var(var).map_err(|_| {
            anyhow::anyhow!("the environment variable {var} (server.metrics_token_env) is not set; set it to the token scrapers send")
        })?,
        ajar_config::SecretRef::Value(value) => value.expose().to_owned(),
    };
    if token.trim().len() < 16 {
        anyhow::bail!(
            "the metrics token (server.metrics_token_env or server.metrics_token_file) is empty or shorter than 16 characters; use a long random value, such as the output of `openssl rand -hex 32`"
        );
    }
    Ok(token)
}

/// Scrapers are few.
const METRICS_CONNECTIONS: u32 = 64;

/// Keeps the live-request gauge right when other replicas change requests:
/// their changes arrive as "something changed" signals (sequence number 0)
/// without events, so the gauge is read again from the store after each
/// burst of them (at most once a second) and at every reconcile interval,
/// which also covers a lost notification. This server's own changes
/// update the gauge as they commit.
async fn follow_live_requests(core: Arc<Core>, every: Duration, mut shutdown: watch::Receiver<bool>) {
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    let mut changes = core.subscribe();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let remote = tokio::select! {
            _ = tick.tick() => false,
            change = changes.recv() => match change {
                Ok(0) | Err(RecvError::Lagged(_)) => true,
                Ok(_) => continue,
                Err(RecvError::Closed) => return,
            },
            _ = shutdown.changed() => return,
        };
        if remote {
            // Gather the rest of the burst into one reading.
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
            loop {
                match changes.try_recv() {
                    Ok(_) | Err(TryRecvError::Lagged(_)) => continue,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Closed) => return,
                }
            }
        }
        if let Err(e) = core.metrics().resync(core.store()).await {
            warn!(error = %e, "cannot count the live requests for /metrics; the next round retries");
        }
    }
}

/// Runs the server for `config_path` until SIGTERM or SIGINT. `on_ready`
/// gets the API's URL once it accepts connections.
pub async fn run(config_path: &Path, on_ready: impl FnOnce(&str)) -> anyhow::Result<std::process::ExitCode> {
    init_logging();
    let config = load_config(config_path)?;
    // The agent listener and hub are not part of this build yet (issue
    // 15): refuse, before anything is written, rather than accept targets
    // nothing would enforce.
    if config.agents.is_some() {
        anyhow::bail!(
            "this ajar server cannot run agents yet: the [agents] section and agent_group are read and checked, \
             but the agent listener is not part of this build; remove [agents] and every agent_group from {} to start",
            config_path.display()
        );
    }
    let data_dir = &config.server.data_dir;
    create_private_dir(data_dir)?;

    let store = crate::database::open(&config).await?;
    let audit_file = AuditFile::open(&data_dir.join("audit.jsonl"))?;
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    // One clock for the core and every driver.
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let drivers = crate::drivers::all(events_tx, clock.clone())
        .into_iter()
        .map(|(kind, driver)| (ajar_domain::Placement::Local(kind), driver))
        .collect();
    let core = Core::new(store.clone(), config.catalog.clone(), settings(&config), drivers, clock, Some(audit_file));
    core.record_started(env!("CARGO_PKG_VERSION"), &config_path.display().to_string()).await?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let scheduler = ajar_core::deadline::spawn(core.clone(), shutdown_rx.clone());
    // Drivers bind their listeners and anything that happened while ajar was
    // down is repaired before the API takes a single request.
    core.start().await.context("cannot start the drivers")?;
    crate::database::follow(core.clone(), store.as_ref()).await?;
    let reconciler = ajar_core::reconcile::spawn(core.clone(), config.server.reconcile_interval, shutdown_rx.clone());
    let recorder = tokio::spawn(record_connections(core.clone(), events_rx));

    // The gauge of live requests starts from the store and then follows
    // every change (see `ajar_core::metrics`).
    core.metrics().resync(core.store()).await.context("cannot count the live requests")?;
    let live_gauge =
        tokio::spawn(follow_live_requests(core.clone(), config.server.reconcile_interval, shutdown_rx.clone()));

    let listener = api_listener(config.server.listen).with_context(|| {
        format!(
            "cannot listen on {} (server.listen); is another ajar running? choose another address",
            config.server.listen
        )
    })?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let server_settings = &config.server;
    let max_connections = crate::http_guard::api_connection_budget(server_settings.max_api_connections);
    let connections = Arc::new(ajar_api::ConnectionStats::default());
    let metrics_token = server_settings.metrics_token.as_ref().map(read_metrics_token).transpose()?;
    let token = metrics_token.as_deref().map(ajar_api::MetricsToken::new);
    let main_metrics = match (&server_settings.metrics_listen, &token) {
        (Some(at), _) => ajar_api::MetricsAccess::Elsewhere(*at),
        (None, Some(token)) => ajar_api::MetricsAccess::Token(token.clone()),
        (None, None) if addr.ip().is_loopback() => ajar_api::MetricsAccess::Local,
        (None, None) => {
            warn!(%addr, "/metrics is off: the API listens beyond loopback and no metrics token is set; set [server] metrics_token_env or metrics_token_file, or metrics_listen = \"127.0.0.1:9464\"");
            ajar_api::MetricsAccess::Closed
        }
    };
    let state = AppState {
        core: core.clone(),
        trusted_proxies: Arc::new(server_settings.trusted_proxies.clone()),
        tls: server_settings.tls.is_some(),
        sso: sso(&config)?,
        public_url: server_settings.public_url.clone(),
        metrics: main_metrics,
        idle_timeout: server_settings.http_idle_timeout,
        connections: connections.clone(),
    };
    let metrics_server = match server_settings.metrics_listen {
        Some(at) => {
            let access = match &token {
                Some(token) => ajar_api::MetricsAccess::Token(token.clone()),
                None => {
                    if !at.ip().is_loopback() {
                        warn!(%at, "/metrics on server.metrics_listen answers anyone who can reach it; keep that address private or set server.metrics_token_env or metrics_token_file");
                    }
                    ajar_api::MetricsAccess::Open
                }
            };
            let metrics_state = AppState { metrics: access, ..state.clone() };
            Some(metrics_listener(at, metrics_state, server_settings).await?)
        }
        None => None,
    };
    let app = ajar_api::router(state).into_make_service_with_connect_info::<SocketAddr>();
    let handle = axum_server::Handle::new();

    let scheme = if config.server.tls.is_some() { "https" } else { "http" };
    if config.server.tls.is_none() && !addr.ip().is_loopback() {
        warn!(%addr, "the API listens on a non-loopback address without TLS: passwords and tokens cross the network in clear text; set [server] tls = {{ cert = \"...\", key = \"...\" }}");
    }
    if let Some(url) = &server_settings.public_url {
        if url.starts_with("http://") && !addr.ip().is_loopback() {
            warn!(%url, "server.public_url is plain http: portal cookies are not Secure and sessions cross the network in clear text; put TLS in front and write https://");
        }
    }
    let acceptor = crate::http_guard::ApiAcceptor::new(max_connections, server_settings.http_idle_timeout, connections);
    let server = match &config.server.tls {
        Some(tls) => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let rustls =
                axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key).await.with_context(|| {
                    format!("cannot load the TLS certificate {} and key {}", tls.cert.display(), tls.key.display())
                })?;
            // The TLS handshake runs inside the connection cap and idle
            // timeout, and gets as long as the request's headers would.
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(rustls)
                .handshake_timeout(server_settings.http_header_timeout)
                .acceptor(acceptor);
            let mut server = axum_server::from_tcp(listener).acceptor(acceptor).handle(handle.clone());
            http_timeouts(server.http_builder(), server_settings);
            tokio::spawn(async move { server.serve(app).await })
        }
        None => {
            let mut server = axum_server::from_tcp(listener).acceptor(acceptor).handle(handle.clone());
            http_timeouts(server.http_builder(), server_settings);
            tokio::spawn(async move { server.serve(app).await })
        }
    };
    let url = format!("{scheme}://{addr}");
    info!(%url, public_url = ?server_settings.public_url, max_api_connections = max_connections, "ajar is ready");
    // The portal line first: whoever waits for "listening" has both.
    if let Some(public) = &server_settings.public_url {
        println!("ajar portal at {public}");
    }
    println!("ajar listening on {url}");
    // Links for people start from what their browser reaches.
    on_ready(server_settings.public_url.as_deref().unwrap_or(&url));

    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = hangup.recv() => reload(&core, config_path, &config).await,
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    info!("stopping: no new work is accepted; active grants stay and are enforced again at the next start");
    handle.graceful_shutdown(Some(Duration::from_secs(10)));
    let _ = shutdown_tx.send(true);
    let _ = server.await;
    if let Some((metrics_handle, metrics_task)) = metrics_server {
        metrics_handle.shutdown();
        let _ = metrics_task.await;
    }
    let _ = live_gauge.await;
    let _ = scheduler.await;
    let _ = reconciler.await;
    recorder.abort();
    Ok(std::process::ExitCode::SUCCESS)
}

/// `ajar server --cleanup`: removes everything ajar installed in the
/// kernel's firewall, and the AWS rules and instances of the configured AWS
/// targets, and exits. The database is left alone: active grants
/// stay active and the next start opens them again.
pub async fn cleanup(config_path: &Path) -> anyhow::Result<std::process::ExitCode> {
    init_logging();
    let config = load_config(config_path)?;
    // Nothing listens here, so nothing reports connections.
    let (events, _) = mpsc::unbounded_channel();
    let mut removed = false;
    for (kind, driver) in crate::drivers::all(events, Arc::new(SystemClock)) {
        // Agents clean up their own hosts; this cleans up this one.
        let targets: Vec<Target> = config
            .catalog
            .targets
            .iter()
            .filter(|t| t.placement() == ajar_domain::Placement::Local(kind))
            .cloned()
            .collect();
        // Each driver's error already says what it could not remove.
        let said = driver.cleanup(&targets).await?;
        for sentence in &said {
            println!("{sentence}");
        }
        removed |= !said.is_empty();
    }
    if removed {
        println!("grants stay active in the database; the next `ajar server` start opens them again unless you revoke them first");
    } else {
        println!("nothing to remove: there is no nftables table inet ajar, no iptables chain or ipset of ajar's, and no AWS rule or instance of ajar's for the configured targets");
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn load_config(path: &Path) -> anyhow::Result<Config> {
    ajar_config::load(path).map_err(|errors| anyhow::anyhow!("the config has problems:\n{errors}"))
}

/// Single sign-on from `[oidc]`, with its client secret read now so that a
/// missing secret stops the start rather than the first sign-in.
fn sso(config: &Config) -> anyhow::Result<Option<Arc<ajar_oidc::Sso>>> {
    let Some(settings) = &config.oidc else { return Ok(None) };
    let secret =
        settings.client_secret.as_ref().map(ajar_oidc::resolve_secret).transpose().map_err(anyhow::Error::msg)?;
    let sso = ajar_oidc::Sso::new(settings.clone(), secret).map_err(anyhow::Error::msg)?;
    info!(issuer = %settings.issuer, local_users = settings.local_users, "single sign-on is on");
    Ok(Some(Arc::new(sso)))
}

fn settings(config: &Config) -> CoreSettings {
    CoreSettings {
        approval_timeout: config.server.approval_timeout,
        max_pending_per_requester: config.server.max_pending_per_requester,
        token_ttl: config.server.token_ttl,
        local_users: config.oidc.as_ref().is_none_or(|o| o.local_users),
    }
}

/// SIGHUP: a bad file is rejected whole and the running config stays.
async fn reload(core: &Arc<Core>, path: &Path, running: &Config) {
    info!(config = %path.display(), "reloading the config");
    match ajar_config::load(path) {
        Err(errors) => {
            for e in &errors.0 {
                error!(error = %e, "config reload rejected");
            }
            if let Err(e) = core.reload_rejected(errors.0.iter().map(|e| e.to_string()).collect()).await {
                error!(error = %e, "cannot audit the rejected reload");
            }
        }
        Ok(new) => {
            let (a, b) = (&new.server, &running.server);
            if a.listen != b.listen || a.data_dir != b.data_dir || a.tls != b.tls {
                warn!("server.listen, server.data_dir and server.tls change only at restart; the rest of the new config applies now");
            }
            if (a.http_header_timeout, a.http_idle_timeout, a.max_api_connections, &a.public_url)
                != (b.http_header_timeout, b.http_idle_timeout, b.max_api_connections, &b.public_url)
                || (a.metrics_listen, &a.metrics_token) != (b.metrics_listen, &b.metrics_token)
            {
                warn!("server.http_header_timeout, http_idle_timeout, max_api_connections, public_url, metrics_listen and the metrics token change only at restart");
            }
            let new_settings = settings(&new);
            match core.reload(new.catalog, new_settings).await {
                Ok(()) => info!("config reloaded"),
                Err(e) => {
                    error!(error = %e, "config reload failed; the previous config stays in force");
                    let _ = core.reload_rejected(vec![e.to_string()]).await;
                }
            }
        }
    }
}

/// Audits the gateway's connection events.
async fn record_connections(core: Arc<Core>, mut events: mpsc::UnboundedReceiver<ConnectionEvent>) {
    while let Some(event) = events.recv().await {
        core.record_connection(event).await;
    }
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make the data directory {} private", dir.display()))?;
    Ok(())
}

/// Logs go to stderr: human-readable by default, JSON lines with
/// `AJAR_LOG_FORMAT=json`; the level comes from `AJAR_LOG` (default info).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AJAR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    // Colour only on a terminal: journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let result = if std::env::var("AJAR_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    // A second init (tests, `up` calling `run`) keeps the first subscriber.
    drop(result);
}
