//! The client commands: each talks to a server through `ajar-client` and
//! prints a table (or the API's JSON with `--json`).

use std::io::{BufRead, IsTerminal};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use ajar_client::{Client, CreateRequestBody, EnforcementStatus, ListQuery, RequestDto, RequestState, Verb};
use ajar_domain::Timestamp;
use ajar_enforce::clock::{Clock, SystemClock};
use anyhow::{bail, Context as _};

use crate::credentials::{self, Credentials};
use crate::output::{clean, clock, relative, span, table, table_with};

pub struct Context {
    pub server: Option<String>,
    pub json: bool,
}

const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

impl Context {
    fn server(&self, saved: Option<&Credentials>) -> String {
        self.server.clone().or_else(|| saved.map(|c| c.server.clone())).unwrap_or_else(|| DEFAULT_SERVER.to_owned())
    }

    /// A client with the saved token, when it was issued by this server.
    fn client(&self) -> anyhow::Result<Client> {
        let saved = credentials::load();
        let server = self.server(saved.as_ref());
        let token = saved.filter(|c| c.server.trim_end_matches('/') == server.trim_end_matches('/')).map(|c| c.token);
        if token.is_none() {
            bail!("you are not logged in to {server}; run `ajar login NAME` (with --server {server} if that is not the default)");
        }
        Ok(Client::new(&server, token)?)
    }

    /// The time every "in 14m" and "3m ago" is counted from.
    fn now(&self) -> Timestamp {
        SystemClock.now()
    }

    fn print_json<T: serde::Serialize>(&self, value: &T) -> anyhow::Result<()> {
        println!("{}", serde_json::to_string_pretty(value)?);
        Ok(())
    }
}

pub fn check_config(file: &Path) -> ExitCode {
    match ajar_config::load(file) {
        Ok(config) => {
            println!("{}", ajar_config::summary(&config));
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{} problem(s) in {}; nothing was changed", errors.0.len(), file.display());
            ExitCode::FAILURE
        }
    }
}

fn read_secret(prompt: &str, from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("cannot read the password from stdin")?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    rpassword::prompt_password(prompt).context("cannot read the password")
}

pub fn hash_password() -> anyhow::Result<ExitCode> {
    let interactive = std::io::stdin().is_terminal();
    let password = read_secret("Password: ", false)?;
    if interactive && read_secret("Again: ", false)? != password {
        bail!("the two passwords differ; nothing was hashed");
    }
    if password.chars().count() < 12 {
        bail!("the password is shorter than 12 characters; choose a longer one");
    }
    println!("{}", ajar_core::auth::hash_password(&password).map_err(anyhow::Error::msg)?);
    Ok(ExitCode::SUCCESS)
}

pub async fn login(ctx: &Context, username: &str, password_stdin: bool) -> anyhow::Result<ExitCode> {
    let saved = credentials::load();
    let server = ctx.server(saved.as_ref());
    let password = read_secret(&format!("Password for {username} at {server}: "), password_stdin)?;
    let client = Client::new(&server, None)?;
    let response = client.login(username, &password).await?;
    save_login(ctx, &server, response)
}

/// `ajar login --sso`.
pub async fn login_sso(ctx: &Context, loopback: bool, open_browser: bool) -> anyhow::Result<ExitCode> {
    let saved = credentials::load();
    let server = ctx.server(saved.as_ref());
    let client = Client::new(&server, None)?;
    let response = crate::sso_login::sso(&client, loopback, open_browser).await?;
    save_login(ctx, &server, response)
}

fn save_login(ctx: &Context, server: &str, response: ajar_client::LoginResponse) -> anyhow::Result<ExitCode> {
    let server = server.to_owned();
    let path = credentials::save(&Credentials {
        server: server.clone(),
        username: response.username.clone(),
        token: response.token.clone(),
        expires_at: response.expires_at,
    })?;
    if ctx.json {
        ctx.print_json(&serde_json::json!({
            "username": response.username, "server": server, "expires_at": response.expires_at,
        }))?;
    } else {
        println!(
            "logged in to {server} as {} until {} ({}); token saved in {}",
            response.username,
            clock(response.expires_at),
            relative(response.expires_at, ctx.now()),
            path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn logout(ctx: &Context, forget: bool) -> anyhow::Result<ExitCode> {
    let Some(saved) = credentials::load() else {
        println!("you were not logged in");
        return Ok(ExitCode::SUCCESS);
    };
    if forget {
        credentials::remove()?;
        println!(
            "the saved token is deleted; it stays valid on {} until {} unless you sign out there",
            saved.server,
            clock(saved.expires_at)
        );
        return Ok(ExitCode::SUCCESS);
    }
    let client = Client::new(&saved.server, Some(saved.token.clone()))?;
    match client.logout().await {
        // Already expired or revoked on the server: nothing left to end.
        Ok(()) | Err(ajar_client::ClientError::Api(ajar_client::Problem { status: 401, .. })) => {}
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "cannot sign out at {}, so the token still works there; the saved token is kept: run `ajar logout` again once the server answers, or `ajar logout --forget` to only delete the saved copy",
                saved.server
            )))
        }
    }
    credentials::remove()?;
    if ctx.json {
        ctx.print_json(&serde_json::json!({ "logged_out": true, "server": saved.server }))?;
    } else {
        println!(
            "logged out of {}: the server no longer accepts the token, and the saved copy is deleted",
            saved.server
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn revoke_sessions(ctx: &Context, user: &str) -> anyhow::Result<ExitCode> {
    let answer = ctx.client()?.revoke_tokens(user).await?;
    if ctx.json {
        ctx.print_json(&answer)?;
    } else {
        println!("ended every session of {}: {} token(s) stopped working", answer.user, answer.revoked);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn whoami(ctx: &Context) -> anyhow::Result<ExitCode> {
    let me = ctx.client()?.whoami().await?;
    if ctx.json {
        ctx.print_json(&me)?;
    } else {
        let mut roles = Vec::new();
        if me.admin {
            roles.push("admin");
        }
        if me.auditor {
            roles.push("auditor");
        }
        println!(
            "{} (groups: {}){}",
            me.username,
            if me.groups.is_empty() { "none".to_owned() } else { me.groups.join(", ") },
            if roles.is_empty() { String::new() } else { format!("; {}", roles.join(", ")) }
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn targets(ctx: &Context) -> anyhow::Result<ExitCode> {
    let targets = ctx.client()?.targets().await?;
    if ctx.json {
        ctx.print_json(&targets)?;
        return Ok(ExitCode::SUCCESS);
    }
    if targets.is_empty() {
        println!("no target may be requested by you; ask an admin for a policy");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = targets
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.max_duration.clone(),
                if t.reason_required { "yes".into() } else { "no".into() },
                match t.approvals_required {
                    0 => "automatic".into(),
                    n => format!("{n} of {}", t.approvers.join(", ")),
                },
                t.connect.as_ref().map_or("-".into(), |c| format!("{}:{}", c.host, c.port)),
                t.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
            ]
        })
        .collect();
    table(&["TARGET", "MAX", "REASON", "APPROVAL", "CONNECT", "LABELS"], &rows);
    Ok(ExitCode::SUCCESS)
}

fn print_request(ctx: &Context, r: &RequestDto) -> anyhow::Result<()> {
    if ctx.json {
        return ctx.print_json(r);
    }
    let now = ctx.now();
    println!("request {} for {} by {}: {}", r.id, r.target, clean(&r.requester), r.state);
    println!("  reason     {}", if r.reason.is_empty() { "-".into() } else { clean(&r.reason) });
    println!("  source     {}", r.source);
    println!("  duration   {}", span(r.duration_seconds as i64));
    match r.state {
        RequestState::Pending => {
            println!("  approvals  {} of {}", r.approvals.len(), r.approvals_required);
            println!("  decide by  {} ({})", clock(r.decide_by), relative(r.decide_by, now));
        }
        _ => {
            if let Some(start) = r.starts_at {
                println!("  started    {} ({})", clock(start), relative(start, now));
            }
            if let Some(end) = r.ends_at {
                println!(
                    "  {}       {} ({})",
                    if r.state == RequestState::Active { "ends" } else { "ended" },
                    clock(end),
                    relative(end, now)
                );
            }
        }
    }
    for a in &r.approvals {
        println!(
            "  approved   by {} {}{}",
            clean(&a.approver),
            relative(a.at, now),
            a.comment.as_ref().map_or(String::new(), |c| format!(": {}", clean(c)))
        );
    }
    if let Some(by) = &r.closed_by {
        println!(
            "  closed by  {}{}",
            clean(by),
            r.close_comment.as_ref().map_or(String::new(), |c| format!(": {}", clean(c)))
        );
    }
    println!(
        "  network    {}{}",
        r.enforcement.status,
        r.enforcement.error.as_ref().map_or(String::new(), |e| format!(" ({})", clean(e)))
    );
    if let Some(c) = &r.connect {
        println!("  connect    {}:{}", c.host, c.port);
    }
    Ok(())
}

/// Polls a request until it is no longer pending (and its path is open, if
/// it became active). Prints who must approve while it waits.
async fn wait_for(ctx: &Context, client: &Client, mut request: RequestDto) -> anyhow::Result<RequestDto> {
    let mut said = false;
    loop {
        let settled = match request.state {
            RequestState::Pending => false,
            RequestState::Active => request.enforcement.status != EnforcementStatus::Opening,
            _ => true,
        };
        if settled {
            return Ok(request);
        }
        if request.state == RequestState::Pending && !said && !ctx.json {
            let approvers = client
                .targets()
                .await
                .ok()
                .and_then(|ts| ts.into_iter().find(|t| t.name == request.target))
                .map(|t| t.approvers.join(", "))
                .unwrap_or_else(|| "the approvers".into());
            eprintln!(
                "waiting for {} approval(s) from {approvers} (request {}; they run `ajar approve {}`); Ctrl-C stops waiting",
                request.approvals_required, request.id, request.id
            );
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        request = client.get_request(&request.id).await?;
    }
}

/// Whether the request ended without (or after) access: anything but
/// pending or active.
fn refused(r: &RequestDto) -> bool {
    r.state.is_final()
}

pub async fn request(
    ctx: &Context,
    target: String,
    duration: String,
    reason: String,
    source: Option<String>,
    wait: bool,
) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let mut r = client.create_request(&CreateRequestBody { target, duration, reason, source }).await?;
    if wait {
        r = wait_for(ctx, &client, r).await?;
    }
    print_request(ctx, &r)?;
    Ok(if refused(&r) { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

pub async fn connect(
    ctx: &Context,
    target: String,
    duration: String,
    reason: String,
    source: Option<String>,
    command: Vec<String>,
) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let me = client.whoami().await?;
    let query =
        ListQuery { states: vec![RequestState::Active], target: Some(target.clone()), requester: Some(me.username) };
    let existing = client.list_requests(&query).await?.into_iter().find(|r| r.connect.is_some());
    let (grant, ours) = match existing {
        Some(r) => (r, false),
        None => {
            let created = client.create_request(&CreateRequestBody { target, duration, reason, source }).await?;
            let waited = tokio::select! {
                r = wait_for(ctx, &client, created.clone()) => r?,
                _ = tokio::signal::ctrl_c() => {
                    if client.act(&created.id, Verb::Cancel, None).await.is_ok() {
                        eprintln!("stopped waiting; request {} cancelled", created.id);
                    }
                    return Ok(ExitCode::FAILURE);
                }
            };
            (waited, true)
        }
    };
    if refused(&grant) {
        print_request(ctx, &grant)?;
        bail!(
            "request {} was {}{}",
            grant.id,
            grant.state,
            grant.close_comment.as_ref().map_or(String::new(), |c| format!(": {c}"))
        );
    }
    let Some(connect) = grant.connect.as_ref() else {
        bail!(
            "request {} is active but its network path is {}{}; `ajar show {}` tells more",
            grant.id,
            grant.enforcement.status,
            grant.enforcement.error.as_ref().map_or(String::new(), |e| format!(" ({e})")),
            grant.id
        );
    };
    let until = grant.ends_at.map_or("-".to_owned(), |e| format!("{} ({})", clock(e), relative(e, ctx.now())));
    if command.is_empty() {
        if ctx.json {
            ctx.print_json(&grant)?;
        } else {
            println!("connect to {}:{} until {until} (request {})", connect.host, connect.port, grant.id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let port = connect.port.to_string();
    let args: Vec<String> =
        command.iter().map(|a| a.replace("{host}", &connect.host).replace("{port}", &port)).collect();
    eprintln!("ajar: {} open until {until}; running {}", grant.target, args.join(" "));
    let status = tokio::process::Command::new(&args[0])
        .args(&args[1..])
        .status()
        .await
        .with_context(|| format!("cannot run {}", args[0]));
    if ours {
        match client.act(&grant.id, Verb::Release, None).await {
            Ok(_) => eprintln!("ajar: released request {}", grant.id),
            // It may have ended on its own while the command ran.
            Err(e) if e.slug() == Some("wrong-state") => {}
            Err(e) => eprintln!("ajar: could not release request {}: {e}", grant.id),
        }
    }
    let status = status?;
    Ok(ExitCode::from(status.code().map_or(1, |c| u8::try_from(c).unwrap_or(1))))
}

pub async fn ls(
    ctx: &Context,
    state: Option<String>,
    target: Option<String>,
    requester: Option<String>,
    all: bool,
) -> anyhow::Result<ExitCode> {
    let states = match (state, all) {
        (Some(s), _) => parse_states(&s)?,
        (None, true) => Vec::new(),
        (None, false) => vec![RequestState::Pending, RequestState::Active],
    };
    let requests = ctx.client()?.list_requests(&ListQuery { states, target, requester }).await?;
    if ctx.json {
        ctx.print_json(&requests)?;
        return Ok(ExitCode::SUCCESS);
    }
    if requests.is_empty() {
        println!("no requests{}", if all { "" } else { " pending or active (--all shows finished ones too)" });
        return Ok(ExitCode::SUCCESS);
    }
    let now = ctx.now();
    let rows: Vec<Vec<String>> = requests
        .iter()
        .map(|r| {
            let when = match (r.state, r.ends_at) {
                (RequestState::Pending, _) => format!("times out {}", relative(r.decide_by, now)),
                (RequestState::Active, Some(end)) => format!("ends {}", relative(end, now)),
                (_, Some(end)) => format!("ended {}", relative(end, now)),
                _ => format!("asked {}", relative(r.created_at, now)),
            };
            vec![
                r.id.clone(),
                r.target.clone(),
                r.requester.clone(),
                r.state.to_string(),
                when,
                r.source.clone(),
                if r.state == RequestState::Pending {
                    format!("{}/{}", r.approvals.len(), r.approvals_required)
                } else {
                    r.enforcement.status.to_string()
                },
                r.reason.chars().take(40).collect(),
            ]
        })
        .collect();
    table(&["ID", "TARGET", "REQUESTER", "STATE", "WHEN", "SOURCE", "APPROVALS/NET", "REASON"], &rows);
    Ok(ExitCode::SUCCESS)
}

/// `--state pending,active`: the states to list, told apart by commas.
/// An unknown word is refused here with the server's own sentence.
fn parse_states(text: &str) -> anyhow::Result<Vec<RequestState>> {
    let mut states = Vec::new();
    for word in text.split(',').filter(|s| !s.is_empty()) {
        states.push(word.trim().parse().map_err(|_| ajar_client::UnknownState(word.to_owned()))?);
    }
    Ok(states)
}

pub async fn show(ctx: &Context, id: &str) -> anyhow::Result<ExitCode> {
    let r = ctx.client()?.get_request(id).await?;
    print_request(ctx, &r)?;
    Ok(ExitCode::SUCCESS)
}

pub async fn act(ctx: &Context, id: &str, verb: Verb, comment: Option<String>) -> anyhow::Result<ExitCode> {
    let r = ctx.client()?.act(id, verb, comment).await?;
    print_request(ctx, &r)?;
    Ok(ExitCode::SUCCESS)
}

pub async fn audit(ctx: &Context, after: i64, limit: u32, follow: bool, verify: bool) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    if verify {
        let report = client.verify_audit().await?;
        if ctx.json {
            ctx.print_json(&report)?;
        } else if report.ok {
            println!("audit log intact: {} events, head {}", report.events, report.head_hash);
        } else {
            println!(
                "audit log BROKEN at event {}: {}",
                report.first_bad_seq.unwrap_or(0),
                report.problem.as_deref().unwrap_or("unknown problem")
            );
        }
        return Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    let mut after = after;
    let mut header = !ctx.json;
    loop {
        let page = client.audit(after, limit).await?;
        after = page.next_after;
        if ctx.json {
            // JSON lines, so that the output can be appended to a file.
            for event in &page.events {
                println!("{}", serde_json::to_string(event)?);
            }
        } else if !page.events.is_empty() {
            let rows: Vec<Vec<String>> = page
                .events
                .iter()
                .map(|e| {
                    vec![
                        e.seq.to_string(),
                        clock(e.at),
                        e.actor.clone(),
                        e.action.clone(),
                        e.target.clone().unwrap_or_default(),
                        e.source.clone().unwrap_or_default(),
                        e.request_id.clone().unwrap_or_default(),
                        e.reason.clone().unwrap_or_default().chars().take(40).collect(),
                    ]
                })
                .collect();
            let headers = ["SEQ", "AT", "ACTOR", "ACTION", "TARGET", "SOURCE", "REQUEST", "REASON"];
            table_with(&headers, &rows, header);
            header = false;
        }
        if !follow {
            return Ok(ExitCode::SUCCESS);
        }
        if page.events.len() < limit as usize {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
