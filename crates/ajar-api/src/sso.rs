//! Single sign-on for the CLI over JSON: whether the server offers it, and
//! the device and loopback sign-ins it runs on the CLI's behalf (the
//! provider's client secret stays on the server). The browser's sign-in
//! is the portal's (`portal::sso`); JWT bearer tokens are checked where
//! every caller is (`edge::caller`).

use ajar_wire::{LoginResponse, SsoDevice, SsoDevicePoll, SsoHandoff, SsoInfo, SsoStatus};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use crate::edge::caller::{failed_sign_in, ClientAddr};
use crate::{AppState, Problem};

/// Whether and how this server signs in through SSO.
pub async fn info(State(state): State<AppState>) -> Result<Json<SsoInfo>, Problem> {
    let Some(sso) = &state.sso else {
        return Ok(Json(SsoInfo { enabled: false, device_flow: false, local_users: true }));
    };
    let device_flow = sso.supports_device_flow().await.map_err(|e| Problem::from_sso(&e))?;
    Ok(Json(SsoInfo { enabled: true, device_flow, local_users: sso.local_users() }))
}

/// Starts a device sign-in at the provider on the CLI's behalf (the client
/// secret stays on the server).
pub async fn device_start(State(state): State<AppState>) -> Result<Json<SsoDevice>, Problem> {
    let sso = state.sso()?;
    let d = sso.device_start().await.map_err(|e| Problem::from_sso(&e))?;
    Ok(Json(SsoDevice {
        device_code: d.device_code,
        user_code: d.user_code,
        verification_uri: d.verification_uri,
        verification_uri_complete: d.verification_uri_complete,
        expires_in: d.expires_in,
        interval: d.interval,
    }))
}

pub async fn device_poll(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    Json(body): Json<SsoDevicePoll>,
) -> Result<Json<SsoStatus>, Problem> {
    let sso = state.sso()?;
    match sso.device_poll(&body.device_code, state.core.now().timestamp()).await {
        Ok(Ok(None)) => Ok(Json(SsoStatus::Pending)),
        Ok(Ok(Some(identity))) => {
            let (token, expires_at) = state.core.sso_login(&identity, addr, "sso-device").await?;
            Ok(Json(SsoStatus::Done(LoginResponse { token, expires_at, username: identity.name.to_string() })))
        }
        Ok(Err(why)) => {
            let _ = state.core.record_failed_sign_in(None, addr, "sso-device", &why).await;
            Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "sign-in-failed",
                format!("the device sign-in ended without success: {why}; run `ajar login --sso` again"),
            ))
        }
        Err(e) => Err(failed_sign_in(&state, addr, "sso-device", e).await),
    }
}

/// Redeems the one-time code of a loopback sign-in.
pub async fn loopback_token(
    State(state): State<AppState>,
    Json(body): Json<SsoHandoff>,
) -> Result<Json<LoginResponse>, Problem> {
    let (username, token, expires_at) = state.core.redeem_handoff(&body.code, &body.verifier).await?;
    Ok(Json(LoginResponse { token, expires_at, username }))
}
