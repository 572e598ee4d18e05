//! `ajar`: the one binary. Runs the server (`up`, `server`), checks
//! configs, and is the command-line client of the HTTP API.

mod commands;
mod credentials;
mod database;
mod drivers;
mod http_guard;
mod output;
mod serve;
mod sso_login;
mod up;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ajar",
    version,
    about = "Just-in-time network access: ask for a target, get it approved, connect, and it closes on time.",
    after_help = "Start here: `ajar up` runs a server on this machine; `ajar login NAME` and `ajar targets` come next."
)]
struct Cli {
    /// The ajar server's URL [default: the one you last logged in to, else http://127.0.0.1:8080]
    #[arg(long, env = "AJAR_SERVER", global = true)]
    server: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run ajar on this machine with the embedded defaults (SQLite, built-in gateway), creating a sample config on first start.
    Up {
        /// Where the config, database and audit log live.
        #[arg(long, default_value = "ajar-data")]
        dir: PathBuf,
        /// Where the API listens on first start (written into the sample
        /// config; default 127.0.0.1:8080). Later starts use the config's
        /// `server.listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Run the server with a config file.
    Server {
        #[arg(long, short)]
        config: PathBuf,
        /// Instead of running, remove everything ajar installed in the kernel's firewall (the nftables table inet ajar; the iptables chains AJAR-PREROUTING and AJAR-FORWARD with their jumps and ipsets) and in AWS for the configured targets (security-group rules tagged by ajar, app-server instances) and exit.
        #[arg(long)]
        cleanup: bool,
    },
    /// Create or upgrade the database the config names (SQLite in data_dir, or [server] database) and exit.
    Migrate {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a config file and summarise it; exits 1 and lists every problem if it is wrong.
    CheckConfig { file: PathBuf },
    /// Hash a password (read from stdin) for a user's password_hash in the config.
    HashPassword,
    /// Log in (as a local user, or with --sso through the identity provider) and save the token (0600).
    Login {
        /// The local user to log in as (not with --sso).
        #[arg(required_unless_present = "sso", conflicts_with = "sso")]
        username: Option<String>,
        /// Sign in through the server's identity provider: the device flow where the provider offers it, else a browser redirect to 127.0.0.1.
        #[arg(long)]
        sso: bool,
        /// With --sso: use the browser redirect even if the provider offers the device flow.
        #[arg(long, requires = "sso")]
        loopback: bool,
        /// With --sso: only print the sign-in URL instead of also opening a browser.
        #[arg(long, requires = "sso")]
        no_browser: bool,
        /// Read the password from stdin instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Sign out: the server stops accepting your token, then the saved copy is deleted. An admin can end every session of another user with --user.
    Logout {
        /// Only delete the saved token, without telling the server (the token keeps working there until it expires).
        #[arg(long, conflicts_with = "user")]
        forget: bool,
        /// (Admins) end every session of this user instead: all of their tokens stop working at once.
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
    /// Show who you are logged in as.
    Whoami,
    /// List the targets you may request, with their limits.
    Targets,
    /// Ask for access to a target.
    Request {
        target: String,
        /// How long, such as 15m or 1h30m.
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
        /// Why you need access (an incident or ticket number).
        #[arg(long, default_value = "")]
        reason: String,
        /// Bind the grant to this address or network instead of your own address.
        #[arg(long)]
        source: Option<String>,
        /// Wait until the request is active or refused.
        #[arg(long)]
        wait: bool,
    },
    /// Get access to a target (reusing your active grant, or requesting one and waiting for approval), then print where to connect or run COMMAND with {host} and {port} substituted.
    Connect {
        target: String,
        #[arg(long = "for", value_name = "DURATION", default_value = "30m")]
        duration: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long)]
        source: Option<String>,
        /// The command to run once the path is open, after `--`.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// List requests: yours, and those you may approve (all for admins and auditors).
    Ls {
        /// Only these states (comma-separated); default pending and active.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        target: Option<String>,
        #[arg(long)]
        requester: Option<String>,
        /// Every state, including finished requests.
        #[arg(long)]
        all: bool,
    },
    /// Show one request.
    Show { id: String },
    /// Approve a pending request.
    Approve {
        id: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Deny a pending request.
    Deny {
        id: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Withdraw your own pending request.
    Cancel { id: String },
    /// End your own active grant now.
    Release { id: String },
    /// End someone's active grant now (approvers and admins).
    Revoke {
        id: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Read the audit log, follow it, or verify its hash chain.
    Audit {
        /// Start after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: i64,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Keep printing new events as they happen.
        #[arg(long)]
        follow: bool,
        /// Verify the whole chain and the audit file; exits 1 naming the first bad event.
        #[arg(long, conflicts_with = "follow")]
        verify: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let ctx = commands::Context { server: cli.server, json: cli.json };
    match cli.command {
        Command::Up { dir, listen } => up::run(&dir, listen).await,
        Command::Server { config, cleanup: true } => serve::cleanup(&config).await,
        Command::Server { config, cleanup: false } => serve::run(&config, |_| {}).await,
        Command::Migrate { config } => database::migrate(&config).await,
        Command::CheckConfig { file } => Ok(commands::check_config(&file)),
        Command::HashPassword => commands::hash_password(),
        Command::Login { username, sso, loopback, no_browser, password_stdin } => match username {
            Some(username) if !sso => commands::login(&ctx, &username, password_stdin).await,
            _ => commands::login_sso(&ctx, loopback, !no_browser).await,
        },
        Command::Logout { forget, user: None } => commands::logout(&ctx, forget).await,
        Command::Logout { user: Some(user), .. } => commands::revoke_sessions(&ctx, &user).await,
        Command::Whoami => commands::whoami(&ctx).await,
        Command::Targets => commands::targets(&ctx).await,
        Command::Request { target, duration, reason, source, wait } => {
            commands::request(&ctx, target, duration, reason, source, wait).await
        }
        Command::Connect { target, duration, reason, source, command } => {
            commands::connect(&ctx, target, duration, reason, source, command).await
        }
        Command::Ls { state, target, requester, all } => commands::ls(&ctx, state, target, requester, all).await,
        Command::Show { id } => commands::show(&ctx, &id).await,
        Command::Approve { id, comment } => commands::act(&ctx, &id, ajar_client::Verb::Approve, comment).await,
        Command::Deny { id, comment } => commands::act(&ctx, &id, ajar_client::Verb::Deny, comment).await,
        Command::Cancel { id } => commands::act(&ctx, &id, ajar_client::Verb::Cancel, None).await,
        Command::Release { id } => commands::act(&ctx, &id, ajar_client::Verb::Release, None).await,
        Command::Revoke { id, comment } => commands::act(&ctx, &id, ajar_client::Verb::Revoke, comment).await,
        Command::Audit { after, limit, follow, verify } => commands::audit(&ctx, after, limit, follow, verify).await,
    }
}
