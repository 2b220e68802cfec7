//! The `im-server` binary: the whole chat system in one process.
//!
//! With no flags it listens on 127.0.0.1:8080 and keeps everything in
//! `./data` (embedded store). Every flag has an `IM_*` environment variable.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use im_server::{Server, ServerBuilder, ServerConfig};
use tracing_subscriber::EnvFilter;

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(
    name = "im-server",
    version,
    about = "The im chat server: WebSocket gateway, HTTP API, dispatcher."
)]
struct Args {
    /// Address to serve HTTP and WebSocket on.
    #[arg(long, env = "IM_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Directory of the embedded store and the generated token secret.
    #[arg(long, env = "IM_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Keep everything in memory (nothing survives a restart).
    #[arg(long, env = "IM_MEMORY")]
    memory: bool,
    /// Token signing secret (all nodes of a cluster share it). Default: a
    /// random secret generated once and kept in DATA_DIR/token.key.
    #[arg(long, env = "IM_TOKEN_SECRET", hide_env_values = true)]
    token_secret: Option<String>,
    /// This node's name.
    #[arg(long, env = "IM_NODE_NAME", default_value = "im-1")]
    node_name: String,
    /// WebSocket URL the dispatcher hands out for this node (default: from the Host header).
    #[arg(long, env = "IM_PUBLIC_WS_URL")]
    public_ws_url: Option<String>,
    /// Origins allowed to open WebSockets, comma-separated (default: any).
    #[arg(long, env = "IM_ALLOWED_ORIGINS", value_delimiter = ',')]
    allowed_origins: Vec<String>,
    /// Most members per group.
    #[arg(long, env = "IM_MAX_GROUP_MEMBERS", default_value_t = 500)]
    max_group_members: usize,
    /// Groups up to this size get read and delivery receipts pushed live
    /// (larger ones: on request only).
    #[arg(long, env = "IM_RECEIPTS_LIVE_MAX_MEMBERS", default_value_t = 100)]
    receipts_live_max_members: usize,
    /// Most concurrent WebSocket connections.
    #[arg(long, env = "IM_MAX_CONNECTIONS", default_value_t = 100_000)]
    max_connections: usize,
    /// Most open connections from one client address (an IPv6 /64 counts
    /// as one); 0: no cap. Raise it or set 0 behind a reverse proxy.
    #[arg(long, env = "IM_MAX_CONNECTIONS_PER_IP", default_value_t = 1_000)]
    max_connections_per_ip: usize,
    /// Longest time a client may take to send a request's head, seconds.
    #[arg(long, env = "IM_HEADER_READ_TIMEOUT_SECS", default_value_t = 15)]
    header_read_timeout_secs: u64,
    /// With Redis: how long a message that arrives ahead of its
    /// conversation's next id waits for the missing ones, ms (0: off).
    #[arg(long, env = "IM_REORDER_WINDOW_MS", default_value_t = 300)]
    reorder_window_ms: u64,
    /// Client ping interval announced in `hello`, seconds.
    #[arg(long, env = "IM_HEARTBEAT_SECS", default_value_t = 15)]
    heartbeat_secs: u64,
    /// Close connections silent this long, seconds.
    #[arg(long, env = "IM_IDLE_TIMEOUT_SECS", default_value_t = 45)]
    idle_timeout_secs: u64,
    /// Presence grace period before "offline", seconds.
    #[arg(long, env = "IM_PRESENCE_GRACE_SECS", default_value_t = 10)]
    presence_grace_secs: u64,
    /// Frames queued per connection before it is closed as a slow reader.
    #[arg(long, env = "IM_SEND_QUEUE", default_value_t = 1024)]
    send_queue: usize,
    /// Largest frame read, bytes.
    #[arg(long, env = "IM_MAX_FRAME_BYTES", default_value_t = im_protocol::limits::DEFAULT_MAX_FRAME_BYTES)]
    max_frame_bytes: usize,
    /// Largest message body, bytes.
    #[arg(long, env = "IM_MAX_BODY_BYTES", default_value_t = im_protocol::limits::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Frames per second per connection.
    #[arg(long, env = "IM_RATE_PER_SEC", default_value_t = 50)]
    rate_per_sec: u32,
    /// Burst of frames per connection.
    #[arg(long, env = "IM_RATE_BURST", default_value_t = 200)]
    rate_burst: u32,
    /// Messages per second one user may send over all their connections
    /// on this node (0: no per-user limit).
    #[arg(long, env = "IM_USER_RATE_PER_SEC", default_value_t = 100)]
    user_rate_per_sec: u32,
    /// Burst of messages per user.
    #[arg(long, env = "IM_USER_RATE_BURST", default_value_t = 400)]
    user_rate_burst: u32,
    /// POST push notifications as JSON to this URL (default: log them).
    #[arg(long, env = "IM_PUSH_WEBHOOK")]
    push_webhook: Option<String>,
    /// Also POST read marks to the push webhook (`{"read": {user, conv, id}}`),
    /// so it can withdraw notifications read elsewhere.
    #[arg(long, env = "IM_PUSH_WEBHOOK_READS")]
    push_webhook_reads: bool,
    /// Redis URL: share presence, the node registry, fan-out and (without
    /// PostgreSQL) sessions with other nodes. Needs the `redis` feature.
    #[arg(long, env = "IM_REDIS_URL")]
    redis_url: Option<String>,
    /// Every Redis key and channel starts with `PREFIX:`. All nodes of a
    /// cluster use the same; deployments sharing one Redis use different ones.
    #[arg(long, env = "IM_REDIS_PREFIX", default_value = "im", value_parser = redis_prefix)]
    redis_prefix: String,
    /// PostgreSQL URL: keep messages, users, groups, rooms and sessions
    /// there instead of DATA_DIR. Needs the `postgres` feature.
    #[arg(long, env = "IM_POSTGRES_URL", hide_env_values = true)]
    postgres_url: Option<String>,
    /// Bearer token for `POST /admin/drain` (default: admin endpoints off).
    #[arg(long, env = "IM_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Drain (SIGTERM or /admin/drain) closes connections spread over this many seconds.
    #[arg(long, env = "IM_DRAIN_WINDOW_SECS", default_value_t = 10)]
    drain_window_secs: u64,
    /// Where uploaded attachments are kept (default: DATA_DIR/attachments;
    /// with --memory, a temporary directory). One node only: a cluster uses --s3-bucket.
    #[arg(long, env = "IM_ATTACHMENTS_DIR")]
    attachments_dir: Option<PathBuf>,
    /// API keys of the server API (`/api/v1/server/…`), comma-separated
    /// (default: none, the server API is off).
    #[arg(long, env = "IM_SERVER_API_KEYS", value_delimiter = ',', hide_env_values = true)]
    server_api_key: Vec<String>,
    /// Also accept JWTs from the application's backend signed with this
    /// HS256 secret (at least 32 bytes). Needs the `jwt` feature.
    #[arg(long, env = "IM_JWT_HS256_SECRET", hide_env_values = true)]
    jwt_hs256_secret: Option<String>,
    /// Also accept JWTs signed with the keys in this file: a PEM public key
    /// (RSA for RS256, Ed25519 for EdDSA) or a JWKS document (.json).
    #[arg(long, env = "IM_JWT_KEY_FILE")]
    jwt_key_file: Option<PathBuf>,
    /// Required `iss` of JWTs.
    #[arg(long, env = "IM_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// Required `aud` of JWTs.
    #[arg(long, env = "IM_JWT_AUDIENCE")]
    jwt_audience: Option<String>,
    /// Clock skew allowed for a JWT's `exp` and `nbf`, seconds.
    #[arg(long, env = "IM_JWT_LEEWAY_SECS", default_value_t = 30)]
    jwt_leeway_secs: u64,
    /// Keep attachments in this S3-compatible bucket instead of a
    /// directory (clients upload and download through presigned URLs).
    /// Needs the `s3` feature and --s3-endpoint and the keys.
    #[arg(long, env = "IM_S3_BUCKET")]
    s3_bucket: Option<String>,
    /// The object store's endpoint, e.g. https://s3.eu-central-1.amazonaws.com.
    #[arg(long, env = "IM_S3_ENDPOINT", requires = "s3_bucket")]
    s3_endpoint: Option<String>,
    /// The endpoint clients reach, if it differs from --s3-endpoint.
    #[arg(long, env = "IM_S3_PUBLIC_ENDPOINT")]
    s3_public_endpoint: Option<String>,
    /// Signature region.
    #[arg(long, env = "IM_S3_REGION", default_value = "us-east-1")]
    s3_region: String,
    /// Access key id.
    #[arg(long, env = "IM_S3_ACCESS_KEY", hide_env_values = true)]
    s3_access_key: Option<String>,
    /// Secret access key.
    #[arg(long, env = "IM_S3_SECRET_KEY", hide_env_values = true)]
    s3_secret_key: Option<String>,
    /// Prefix of every key in the bucket.
    #[arg(long, env = "IM_S3_PREFIX", default_value = "im/")]
    s3_prefix: String,
    /// Largest attachment upload, bytes.
    #[arg(long, env = "IM_MAX_ATTACHMENT_BYTES", default_value_t = 25 * 1024 * 1024)]
    max_attachment_bytes: u64,
    /// MIME types uploads may have, comma-separated (`type/subtype` or `type/*`).
    #[arg(long, env = "IM_ATTACHMENT_TYPES", value_delimiter = ',',
          default_values_t = im_server::config::DEFAULT_ATTACHMENT_TYPES.iter().map(|t| t.to_string()))]
    attachment_types: Vec<String>,
    /// Uploads no message references within this many seconds are removed.
    #[arg(long, env = "IM_ATTACHMENT_ORPHAN_TTL_SECS", default_value_t = 24 * 3600)]
    attachment_orphan_ttl_secs: u64,
    /// Terminate TLS with this certificate chain (PEM, leaf first); needs
    /// --tls-key. Both files are read again on SIGHUP. Needs the `tls` feature.
    #[arg(long, env = "IM_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, RSA or EC).
    #[arg(long, env = "IM_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Ask and tell the application's backend at this URL: signed JSON POSTs
    /// before connections and sends, after joins, leaves and presence
    /// changes (docs/embedding.md §5). Needs --hooks-secret.
    #[arg(long, env = "IM_HOOKS_URL", requires = "hooks_secret")]
    hooks_url: Option<String>,
    /// Signs webhook calls and feed batches (at least 16 characters).
    #[arg(long, env = "IM_HOOKS_SECRET", hide_env_values = true)]
    hooks_secret: Option<String>,
    /// The calls --hooks-url gets: connect, before_send, join, leave, presence.
    #[arg(
        long,
        env = "IM_HOOKS_CALLS",
        value_delimiter = ',',
        default_value = "connect,before_send,join,leave,presence"
    )]
    hooks_calls: Vec<im_server::webhooks::HookCall>,
    /// How long connect and before_send wait for the backend, milliseconds.
    #[arg(long, env = "IM_HOOKS_TIMEOUT_MS", default_value_t = 2000)]
    hooks_timeout_ms: u64,
    /// When the backend does not answer in time: allow (fail-open) or
    /// refuse (fail-closed: clients get `unavailable` and retry).
    #[arg(long, env = "IM_HOOKS_WHEN_DOWN", default_value = "allow")]
    hooks_when_down: im_server::webhooks::WhenDown,
    /// POST every stored message and event here, at least once and in each
    /// conversation's order, from a cursor kept in the store (a backend that
    /// was down gets what it missed). Needs --hooks-secret.
    #[arg(long, env = "IM_FEED_URL", requires = "hooks_secret")]
    feed_url: Option<String>,
}

/// The application's webhooks and message feed, as the arguments ask.
fn with_webhooks(
    mut builder: ServerBuilder,
    args: &Args,
) -> Result<ServerBuilder, Box<dyn std::error::Error>> {
    use im_server::webhooks::{WebhookConfig, WebhookFeed, WebhookHooks};
    let Some(secret) = &args.hooks_secret else { return Ok(builder) };
    if secret.len() < 16 {
        return Err("--hooks-secret needs at least 16 characters".into());
    }
    if let Some(url) = &args.hooks_url {
        let mut cfg = WebhookConfig::new(url.clone(), secret.as_bytes());
        cfg.timeout = Duration::from_millis(args.hooks_timeout_ms.max(1));
        cfg.when_down = args.hooks_when_down;
        cfg.calls = args.hooks_calls.iter().copied().collect();
        builder = builder.hooks(Arc::new(WebhookHooks::new(cfg)));
    }
    if let Some(url) = &args.feed_url {
        let sink = WebhookFeed::new(url.clone(), secret.as_bytes(), Duration::from_secs(10));
        builder = builder.feed(Arc::new(sink), im_server::feed::FeedConfig::default());
    }
    Ok(builder)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("IM_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let args = Args::parse();

    let mut cfg = ServerConfig::default();
    cfg.node_name = args.node_name.clone();
    cfg.public_ws_url = args.public_ws_url.clone();
    cfg.allowed_origins = (!args.allowed_origins.is_empty()).then(|| args.allowed_origins.clone());
    cfg.max_group_members = args.max_group_members;
    cfg.receipts_live_max_members = args.receipts_live_max_members;
    cfg.max_connections = args.max_connections;
    cfg.max_connections_per_ip = args.max_connections_per_ip;
    cfg.header_read_timeout = Duration::from_secs(args.header_read_timeout_secs.max(1));
    cfg.reorder_window = Duration::from_millis(args.reorder_window_ms);
    cfg.heartbeat_interval = Duration::from_secs(args.heartbeat_secs.max(1));
    cfg.idle_timeout = Duration::from_secs(args.idle_timeout_secs.max(args.heartbeat_secs + 1));
    cfg.presence_grace = Duration::from_secs(args.presence_grace_secs);
    cfg.send_queue = args.send_queue;
    cfg.limits.max_frame_bytes = args.max_frame_bytes;
    cfg.limits.max_body_bytes = args.max_body_bytes.min(args.max_frame_bytes);
    cfg.limits.rate_per_sec = args.rate_per_sec;
    cfg.limits.rate_burst = args.rate_burst;
    cfg.user_rate_per_sec = args.user_rate_per_sec;
    cfg.user_rate_burst = args.user_rate_burst;
    cfg.admin_token = args.admin_token.clone();
    cfg.drain_window = Duration::from_secs(args.drain_window_secs);
    cfg.redis_prefix = args.redis_prefix.clone();
    cfg.server_api_keys = args.server_api_key.iter().filter(|k| !k.is_empty()).cloned().collect();
    if cfg.server_api_keys.iter().any(|k| k.len() < 16) {
        return Err("a server API key needs at least 16 characters".into());
    }
    cfg.max_attachment_bytes = args.max_attachment_bytes;
    cfg.attachment_types = args.attachment_types.clone();
    cfg.attachment_orphan_ttl = Duration::from_secs(args.attachment_orphan_ttl_secs.max(1));

    let mut builder = Server::builder().config(cfg);
    if args.redis_url.is_some() && args.token_secret.is_none() {
        return Err("a cluster (--redis-url) needs --token-secret, the same on every node".into());
    }
    let secret = match &args.token_secret {
        Some(s) => s.as_bytes().to_vec(),
        None if args.memory => rand_secret(),
        None => load_or_create_secret(&args.data_dir)?,
    };
    builder = builder.token_secret(secret);
    // Before the store: `embedded` keeps a directory chosen here.
    if args.s3_bucket.is_some() {
        builder = with_s3(builder, &args).await?;
    } else {
        match (&args.attachments_dir, args.memory) {
            (Some(dir), _) => {
                builder = builder.attachments(Arc::new(im_server::attachments::FsAttachments::open(dir)?))
            }
            (None, false) => {
                let dir = args.data_dir.join("attachments");
                builder = builder.attachments(Arc::new(im_server::attachments::FsAttachments::open(dir)?));
            }
            (None, true) => {}
        }
    }
    builder = match (&args.postgres_url, args.memory) {
        (Some(url), _) => with_postgres(builder, url).await?,
        (None, true) => builder.memory(),
        (None, false) => builder.embedded(&args.data_dir)?,
    };
    if let Some(url) = &args.redis_url {
        builder = with_redis(builder, url).await?;
    }
    if let Some(url) = &args.push_webhook {
        let webhook = im_server::push::WebhookPush::new(url.clone(), Duration::from_secs(5))
            .read_notices(args.push_webhook_reads);
        builder = builder.push(Arc::new(webhook));
    }

    builder = with_webhooks(builder, &args)?;
    if args.jwt_hs256_secret.is_some() || args.jwt_key_file.is_some() {
        builder = with_jwt(builder, &args)?;
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let (with_tls, reload) = with_tls(builder, cert, key)?;
            builder = with_tls;
            Some(reload)
        }
        _ => None,
    };
    // Listen for SIGHUP before serving: its default action ends the process.
    let tls = tls.map(|reload| (reload, Hangups::listen()));

    let server = builder.bind(args.listen).await?;
    println!(
        "im-server {} listening on {} (WebSocket {})",
        env!("CARGO_PKG_VERSION"),
        server.http_url(),
        server.ws_url()
    );
    match (&args.postgres_url, args.memory) {
        (Some(_), _) => println!("storage: PostgreSQL"),
        (None, true) => println!("storage: in memory (nothing survives a restart)"),
        (None, false) => println!("storage: embedded, in {}", args.data_dir.display()),
    }
    if args.redis_url.is_some() {
        println!("cluster: Redis (presence, registry, fan-out) as node {}", args.node_name);
    }
    if let Some((reload, hangups)) = tls {
        println!("TLS: certificate and key reloaded on SIGHUP");
        tokio::spawn(reload_on_sighup(reload, hangups));
    }

    // Ctrl-C: stop now (clients reconnect elsewhere at once). SIGTERM or
    // POST /admin/drain: drain, spreading the reconnects over the window.
    tokio::select! {
        _ = tokio::signal::ctrl_c() => server.shutdown().await,
        _ = terminate_signal() => server.drain().await,
        _ = server.drained() => server.shutdown().await,
    }
    Ok(())
}

#[cfg(feature = "postgres")]
async fn with_postgres(b: ServerBuilder, url: &str) -> Result<ServerBuilder, Box<dyn std::error::Error>> {
    Ok(b.postgres(url).await?)
}

#[cfg(not(feature = "postgres"))]
async fn with_postgres(_: ServerBuilder, _: &str) -> Result<ServerBuilder, Box<dyn std::error::Error>> {
    Err("--postgres-url needs im-server built with the `postgres` feature".into())
}

/// Reloads the certificate and key when asked to; a failed reload keeps
/// the pair in use.
type TlsReload = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

#[cfg(feature = "tls")]
fn with_tls(
    b: ServerBuilder,
    cert: &Path,
    key: &Path,
) -> Result<(ServerBuilder, TlsReload), Box<dyn std::error::Error>> {
    let tls = im_server::tls::TlsConfig::from_pem_files(cert, key)?;
    let reload = tls.clone();
    Ok((b.tls(tls), Box::new(move || reload.reload().map_err(|e| e.to_string()))))
}

#[cfg(not(feature = "tls"))]
fn with_tls(
    _: ServerBuilder,
    _: &Path,
    _: &Path,
) -> Result<(ServerBuilder, TlsReload), Box<dyn std::error::Error>> {
    Err("--tls-cert needs im-server built with the `tls` feature".into())
}

/// SIGHUPs received (never any off Unix).
struct Hangups(#[cfg(unix)] Option<tokio::signal::unix::Signal>);

impl Hangups {
    fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let hangups = signal(SignalKind::hangup());
            if let Err(e) = &hangups {
                tracing::warn!(error = %e, "cannot listen for SIGHUP: TLS files will not be reloaded");
            }
            Hangups(hangups.ok())
        }
        #[cfg(not(unix))]
        Hangups()
    }

    async fn next(&mut self) -> Option<()> {
        #[cfg(unix)]
        if let Some(s) = &mut self.0 {
            return s.recv().await;
        }
        None
    }
}

async fn reload_on_sighup(reload: TlsReload, mut hangups: Hangups) {
    while hangups.next().await.is_some() {
        match reload() {
            Ok(()) => tracing::info!("SIGHUP: TLS certificate and key reloaded"),
            Err(e) => tracing::error!(error = %e, "SIGHUP: TLS reload failed; keeping the pair in use"),
        }
    }
}

#[cfg(feature = "jwt")]
fn with_jwt(b: ServerBuilder, args: &Args) -> Result<ServerBuilder, Box<dyn std::error::Error>> {
    use im_server::auth::jwt::{JwtConfig, JwtKey};
    let mut keys = Vec::new();
    if let Some(secret) = &args.jwt_hs256_secret {
        keys.push(JwtKey::hs256(secret.as_bytes().to_vec())?);
    }
    if let Some(path) = &args.jwt_key_file {
        keys.extend(JwtKey::from_file(path)?);
    }
    let mut cfg = JwtConfig::new(keys);
    cfg.issuer = args.jwt_issuer.clone();
    cfg.audience = args.jwt_audience.clone();
    cfg.leeway_secs = args.jwt_leeway_secs;
    Ok(b.jwt(cfg))
}

#[cfg(not(feature = "jwt"))]
fn with_jwt(_: ServerBuilder, _: &Args) -> Result<ServerBuilder, Box<dyn std::error::Error>> {
    Err("--jwt-hs256-secret and --jwt-key-file need im-server built with the `jwt` feature".into())
}

#[cfg(feature = "s3")]
async fn with_s3(b: ServerBuilder, args: &Args) -> Result<ServerBuilder, Box<dyn std::error::Error>> {
    let need = |v: &Option<String>, flag: &str| v.clone().ok_or_else(|| format!("--s3-bucket needs {flag}"));
    let cfg = im_server::attachments::S3Config {
        endpoint: need(&args.s3_endpoint, "--s3-endpoint")?,
        public_endpoint: args.s3_public_endpoint.clone(),
        bucket: need(&args.s3_bucket, "--s3-bucket")?,
        region: args.s3_region.clone(),
        access_key: need(&args.s3_access_key, "--s3-access-key")?,
        secret_key: need(&args.s3_secret_key, "--s3-secret-key")?,
        prefix: args.s3_prefix.clone(),
    };
    let store = im_server::attachments::S3Attachments::connect(cfg).await?;
    Ok(b.attachments(Arc::new(store)))
}

#[cfg(not(feature = "s3"))]
async fn with_s3(_: ServerBuilder, _: &Args) -> Result<ServerBuilder, Box<dyn std::error::Error>> {
    Err("--s3-bucket needs im-server built with the `s3` feature".into())
}

#[cfg(feature = "redis")]
async fn with_redis(b: ServerBuilder, url: &str) -> Result<ServerBuilder, Box<dyn std::error::Error>> {
    Ok(b.redis(url).await?)
}

#[cfg(not(feature = "redis"))]
async fn with_redis(_: ServerBuilder, _: &str) -> Result<ServerBuilder, Box<dyn std::error::Error>> {
    Err("--redis-url needs im-server built with the `redis` feature".into())
}

fn rand_secret() -> Vec<u8> {
    rand::random::<[u8; 32]>().to_vec()
}

/// Reads `DIR/token.key`, or creates it with a random secret (mode 0600).
fn load_or_create_secret(dir: &Path) -> std::io::Result<Vec<u8>> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("token.key");
    if let Ok(existing) = std::fs::read(&path) {
        if existing.len() >= 32 {
            return Ok(existing);
        }
    }
    let secret = rand_secret();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    std::io::Write::write_all(&mut opts.open(&path)?, &secret)?;
    Ok(secret)
}

async fn terminate_signal() {
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending::<()>().await,
    }
    #[cfg(not(unix))]
    std::future::pending::<()>().await
}

/// A Redis key prefix: 1 to 64 of `A-Z a-z 0-9 _ - .` (no `:`, which
/// separates the prefix from the rest of a key).
fn redis_prefix(s: &str) -> Result<String, String> {
    let ok = (1..=64).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err("1 to 64 of A-Z a-z 0-9 _ - . (no ':')".to_owned())
    }
}
