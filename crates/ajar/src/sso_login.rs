//! `ajar login --sso`: sign in through the server's identity provider
//! without a password. The device authorization grant when the provider
//! offers it (show a code, the person approves it in any browser); else a
//! loopback redirect, as `kubectl oidc-login` and `gcloud auth login` do: a
//! one-shot listener on 127.0.0.1 receives a one-time code that only this
//! process (holding the PKCE verifier) can exchange for a token. Either
//! way the provider's client secret stays on the server.

use std::time::{Duration, Instant};

use ajar_client::{Client, LoginResponse};
use anyhow::{bail, Context as _};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How long a sign-in may take before the CLI gives up.
const PATIENCE: Duration = Duration::from_secs(600);

/// Signs in; `loopback` skips the device grant, `open_browser` tries to
/// open the sign-in page with `xdg-open`.
pub async fn sso(client: &Client, loopback: bool, open_browser: bool) -> anyhow::Result<LoginResponse> {
    let info = client.sso_info().await?;
    if !info.enabled {
        bail!("{} does not offer single sign-on; log in with `ajar login NAME`", client.server());
    }
    if info.device_flow && !loopback {
        device(client, open_browser).await
    } else {
        redirect(client, open_browser).await
    }
}

fn open(url: &str, open_browser: bool) {
    if open_browser {
        // Best effort: on a machine without a desktop the printed URL is
        // the way, so a failure here is not an error.
        let _ = std::process::Command::new("xdg-open")
            .arg(url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
}

async fn device(client: &Client, open_browser: bool) -> anyhow::Result<LoginResponse> {
    let start = client.sso_device_start().await?;
    let url = start.verification_uri_complete.clone().unwrap_or_else(|| start.verification_uri.clone());
    eprintln!("To sign in, open {url}");
    eprintln!(
        "and confirm the code {} (waiting up to {} minutes; Ctrl-C stops)",
        start.user_code,
        start.expires_in / 60
    );
    open(&url, open_browser);
    let deadline = Instant::now() + Duration::from_secs(start.expires_in).min(PATIENCE);
    let mut interval = Duration::from_secs(start.interval.clamp(1, 60));
    while Instant::now() < deadline {
        tokio::time::sleep(interval).await;
        match client.sso_device_poll(&start.device_code).await {
            Ok(ajar_client::SsoStatus::Done(login)) => return Ok(login),
            Ok(ajar_client::SsoStatus::Pending) => {}
            // The provider asked to slow down, or the server is briefly
            // unreachable: back off and keep waiting.
            Err(ajar_client::ClientError::Unreachable { .. }) => interval = (interval * 2).min(Duration::from_secs(60)),
            Err(e) => return Err(e.into()),
        }
    }
    bail!("the sign-in was not confirmed in time; run `ajar login --sso` again")
}

async fn redirect(client: &Client, open_browser: bool) -> anyhow::Result<LoginResponse> {
    let listener = TcpListener::bind("127.0.0.1:0").await.context("cannot listen on 127.0.0.1 for the sign-in")?;
    let port = listener.local_addr()?.port();
    let verifier = ajar_oidc::random_value();
    let challenge = ajar_oidc::pkce_challenge(&verifier);
    let url = format!("{}/sso/start?cli_port={port}&cli_challenge={challenge}", client.server());
    eprintln!("To sign in, open {url}");
    eprintln!("(waiting for the browser to come back to 127.0.0.1:{port}; Ctrl-C stops)");
    open(&url, open_browser);
    let code = tokio::time::timeout(PATIENCE, receive_code(&listener))
        .await
        .map_err(|_| anyhow::anyhow!("the sign-in did not finish in time; run `ajar login --sso` again"))??;
    Ok(client.sso_loopback_token(&code, &verifier).await?)
}

/// Serves the one request the browser makes to the loopback listener and
/// returns its `code`. Other requests (a favicon, a port scanner) get 404.
async fn receive_code(listener: &TcpListener) -> anyhow::Result<String> {
    loop {
        let (mut stream, _) = listener.accept().await?;
        let mut buffer = vec![0u8; 8192];
        let mut read = 0;
        while read < buffer.len() && !buffer[..read].windows(4).any(|w| w == b"\r\n\r\n") {
            match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer[read..])).await {
                Ok(Ok(0)) | Err(_) => break,
                Ok(Ok(n)) => read += n,
                Ok(Err(_)) => break,
            }
        }
        let request = String::from_utf8_lossy(&buffer[..read]);
        let target = request.lines().next().and_then(|l| l.split(' ').nth(1)).unwrap_or_default();
        let code = target
            .strip_prefix("/callback?")
            .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("code=")))
            .filter(|c| !c.is_empty() && c.len() <= 128 && c.bytes().all(|b| b.is_ascii_alphanumeric()))
            .map(str::to_owned);
        let (status, body) = match &code {
            Some(_) => ("200 OK", "Signed in to ajar. You can close this tab and return to the terminal."),
            None => ("404 Not Found", "Not the sign-in callback."),
        };
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
        if let Some(code) = code {
            return Ok(code);
        }
    }
}
