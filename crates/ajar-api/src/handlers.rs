//! The `/api/v1` handlers: parse, call the core, shape the answer.

use std::sync::Arc;

use ajar_core::{Core, CoreError, RequestQuery, RequestView};
use ajar_domain::policy::{Ask, Principal};
use ajar_domain::source::SourceNet;
use ajar_domain::GrantDuration;
use ajar_wire::*;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use utoipa::OpenApi;

use crate::edge::caller::{bearer_token, Caller, ClientAddr};
use crate::edge::host::{request_host, Host};
use crate::{wire, AppState, Problem};

/// A JSON body whose every rejection (wrong content type, malformed JSON,
/// unknown or missing fields) is a problem+json 400 that says what is wrong.
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(json_problem(rejection)),
        }
    }
}

fn json_problem(rejection: JsonRejection) -> Problem {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            Problem::bad_request("not-json", "send the body as JSON with `Content-Type: application/json`")
        }
        JsonRejection::JsonSyntaxError(e) => {
            Problem::bad_request("malformed-json", format!("the body is not valid JSON: {}", e.body_text()))
        }
        JsonRejection::JsonDataError(e) => Problem::bad_request(
            "invalid-body",
            format!("the body does not have the expected fields: {}", e.body_text()),
        ),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "the body is larger than the 64 KiB ajar accepts; a reason or comment is at most 1,000 characters",
        ),
        other => Problem::bad_request("invalid-body", other.body_text()),
    }
}

/// An optional JSON body: an empty body means the default.
pub struct OptionalBody<T>(pub T);

impl<S, T> FromRequest<S> for OptionalBody<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let has_body = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).is_none_or(|v| v != "0")
            && (req.headers().contains_key(header::CONTENT_TYPE) || req.headers().contains_key(header::CONTENT_LENGTH));
        if !has_body {
            return Ok(OptionalBody(T::default()));
        }
        Body::<T>::from_request(req, state).await.map(|Body(v)| OptionalBody(v))
    }
}

/// A call on `/requests`: the authenticated caller, the core to ask and
/// the host name that connect addresses fall back to.
pub struct RequestCall {
    core: Arc<Core>,
    who: Principal,
    host: String,
}

impl FromRequestParts<AppState> for RequestCall {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Caller(who) = Caller::from_request_parts(parts, state).await?;
        Ok(Self { core: state.core.clone(), who, host: request_host(&parts.headers) })
    }
}

/// The answer of every route that returns one request.
type OneRequest = Result<Json<RequestDto>, Problem>;

impl RequestCall {
    fn answer(&self, view: Result<RequestView, CoreError>) -> OneRequest {
        Ok(Json(wire::request(view?, &self.host)))
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "ajar", description = "Just-in-time network access: request, approve, grant, expire, audit."),
    paths(login, logout, revoke_tokens, whoami, targets, create_request, list_requests, get_request, approve, deny, cancel, release, revoke, audit, verify_audit),
    components(schemas(Problem, LoginBody, LoginResponse, TokensRevoked, WhoAmI, CreateRequestBody, CommentBody, RequestDto, TargetDto, AuditPage, AuditEventDto, AuditVerifyDto)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Exchange a local user's password for a bearer token.
#[utoipa::path(post, path = "/api/v1/login", request_body = LoginBody,
    responses((status = 200, body = LoginResponse), (status = 401, body = Problem), (status = 429, body = Problem)))]
pub async fn login(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    Body(body): Body<LoginBody>,
) -> Result<Json<LoginResponse>, Problem> {
    let (token, expires_at) = state.core.login(&body.username, &body.password, addr).await?;
    Ok(Json(LoginResponse { token, expires_at, username: body.username }))
}

/// Sign out: the token of this call stops working at once (audited).
#[utoipa::path(post, path = "/api/v1/logout", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = Problem), (status = 422, body = Problem)))]
pub async fn logout(
    State(state): State<AppState>,
    Caller(who): Caller,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
) -> Result<StatusCode, Problem> {
    let token = bearer_token(&headers).unwrap_or_default();
    state.core.logout(&who, token, addr).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// End every session of a user: all of their ajar tokens stop working at once (admins; audited).
#[utoipa::path(post, path = "/api/v1/users/{name}/revoke-tokens", security(("bearer" = [])),
    responses((status = 200, body = TokensRevoked), (status = 403, body = Problem)))]
pub async fn revoke_tokens(
    State(state): State<AppState>,
    Caller(who): Caller,
    ClientAddr(addr): ClientAddr,
    Path(name): Path<String>,
) -> Result<Json<TokensRevoked>, Problem> {
    let revoked = state.core.revoke_tokens_of(&who, &name, addr).await?;
    Ok(Json(TokensRevoked { user: name, revoked }))
}

/// Who the token belongs to.
#[utoipa::path(get, path = "/api/v1/whoami", security(("bearer" = [])), responses((status = 200, body = WhoAmI)))]
pub async fn whoami(State(state): State<AppState>, Caller(who): Caller) -> Json<WhoAmI> {
    let catalog = state.core.catalog();
    Json(WhoAmI {
        username: who.name.to_string(),
        groups: who.groups.iter().map(|g| g.to_string()).collect(),
        admin: who.is_admin(&catalog),
        auditor: who.may_read_all_audit(&catalog),
    })
}

/// The targets you may request, with the limits of the policies that allow them.
#[utoipa::path(get, path = "/api/v1/targets", security(("bearer" = [])), responses((status = 200, body = [TargetDto])))]
pub async fn targets(State(state): State<AppState>, Caller(who): Caller, Host(host): Host) -> Json<Vec<TargetDto>> {
    Json(state.core.targets(&who).into_iter().map(|t| wire::target(t, &host)).collect())
}

/// Ask for access to a target.
#[utoipa::path(post, path = "/api/v1/requests", security(("bearer" = [])), request_body = CreateRequestBody,
    responses((status = 201, body = RequestDto), (status = 400, body = Problem), (status = 422, body = Problem)))]
pub async fn create_request(
    call: RequestCall,
    ClientAddr(addr): ClientAddr,
    Body(body): Body<CreateRequestBody>,
) -> Result<impl IntoResponse, Problem> {
    let duration = GrantDuration::parse(&body.duration)
        .map_err(|e| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-duration", e.to_string()))?;
    let source = body
        .source
        .as_deref()
        .map(SourceNet::parse)
        .transpose()
        .map_err(|e| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-source", e.to_string()))?;
    let ask = Ask { target: body.target, duration, reason: body.reason, source };
    Ok((StatusCode::CREATED, call.answer(call.core.create_request(&call.who, addr, ask).await)?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// One state or several separated by commas.
    state: Option<String>,
    target: Option<String>,
    requester: Option<String>,
    limit: Option<u32>,
}

/// Requests you may see (your own, those you may approve, or all for admins and auditors), newest first.
#[utoipa::path(get, path = "/api/v1/requests", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, body = [RequestDto]), (status = 400, body = Problem)))]
pub async fn list_requests(
    call: RequestCall,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<RequestDto>>, Problem> {
    let Query(query) = query.map_err(|e| Problem::bad_request("invalid-query", e.body_text()))?;
    let mut states = Vec::new();
    for s in query.state.iter().flat_map(|s| s.split(',')).filter(|s| !s.is_empty()) {
        let state: RequestState = s
            .trim()
            .parse()
            .map_err(|_| Problem::bad_request("invalid-query", UnknownState(s.to_owned()).to_string()))?;
        states.push(wire::domain_state(state));
    }
    let query =
        RequestQuery { states, target: query.target, requester: query.requester, limit: query.limit.unwrap_or(0) };
    let views = call.core.find_requests(&call.who, &query).await?;
    Ok(Json(views.into_iter().map(|v| wire::request(v, &call.host)).collect()))
}

/// One request.
#[utoipa::path(get, path = "/api/v1/requests/{id}", security(("bearer" = [])),
    responses((status = 200, body = RequestDto), (status = 404, body = Problem)))]
pub async fn get_request(call: RequestCall, Path(id): Path<String>) -> OneRequest {
    call.answer(call.core.get_request(&call.who, &id).await)
}

/// Approve a pending request (an approver other than the requester).
#[utoipa::path(post, path = "/api/v1/requests/{id}/approve", security(("bearer" = [])), request_body = CommentBody,
    responses((status = 200, body = RequestDto), (status = 403, body = Problem), (status = 409, body = Problem)))]
pub async fn approve(
    call: RequestCall,
    Path(id): Path<String>,
    OptionalBody(body): OptionalBody<CommentBody>,
) -> OneRequest {
    call.answer(call.core.approve(&call.who, &id, body.comment).await)
}

/// Deny a pending request.
#[utoipa::path(post, path = "/api/v1/requests/{id}/deny", security(("bearer" = [])), request_body = CommentBody,
    responses((status = 200, body = RequestDto), (status = 403, body = Problem), (status = 409, body = Problem)))]
pub async fn deny(
    call: RequestCall,
    Path(id): Path<String>,
    OptionalBody(body): OptionalBody<CommentBody>,
) -> OneRequest {
    call.answer(call.core.deny(&call.who, &id, body.comment).await)
}

/// Withdraw your own pending request.
#[utoipa::path(post, path = "/api/v1/requests/{id}/cancel", security(("bearer" = [])),
    responses((status = 200, body = RequestDto), (status = 403, body = Problem), (status = 409, body = Problem)))]
pub async fn cancel(call: RequestCall, Path(id): Path<String>) -> OneRequest {
    call.answer(call.core.cancel(&call.who, &id).await)
}

/// End your own active grant early.
#[utoipa::path(post, path = "/api/v1/requests/{id}/release", security(("bearer" = [])),
    responses((status = 200, body = RequestDto), (status = 403, body = Problem), (status = 409, body = Problem)))]
pub async fn release(call: RequestCall, Path(id): Path<String>) -> OneRequest {
    call.answer(call.core.release(&call.who, &id).await)
}

/// End someone's active grant (an approver of it, or an admin).
#[utoipa::path(post, path = "/api/v1/requests/{id}/revoke", security(("bearer" = [])), request_body = CommentBody,
    responses((status = 200, body = RequestDto), (status = 403, body = Problem), (status = 409, body = Problem)))]
pub async fn revoke(
    call: RequestCall,
    Path(id): Path<String>,
    OptionalBody(body): OptionalBody<CommentBody>,
) -> OneRequest {
    call.answer(call.core.revoke(&call.who, &id, body.comment).await)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Return events after this sequence number.
    after: Option<i64>,
    /// At most this many (1 to 1000, default 100).
    limit: Option<u32>,
}

/// Audit events: all of them for admins and auditors, your own trail otherwise.
#[utoipa::path(get, path = "/api/v1/audit", security(("bearer" = [])), params(AuditQuery),
    responses((status = 200, body = AuditPage)))]
pub async fn audit(
    State(state): State<AppState>,
    Caller(who): Caller,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditPage>, Problem> {
    let Query(query) = query.map_err(|e| Problem::bad_request("invalid-query", e.body_text()))?;
    let after = query.after.unwrap_or(0).max(0);
    let events = state.core.audit_page(&who, after, query.limit.unwrap_or(100)).await?;
    let next_after = events.last().map_or(after, |e| e.seq);
    Ok(Json(AuditPage { events: events.into_iter().map(wire::audit_event).collect(), next_after }))
}

/// Verify the whole hash chain and its copy in the audit file (admins and auditors).
#[utoipa::path(get, path = "/api/v1/audit/verify", security(("bearer" = [])),
    responses((status = 200, body = AuditVerifyDto), (status = 403, body = Problem)))]
pub async fn verify_audit(State(state): State<AppState>, Caller(who): Caller) -> Result<Json<AuditVerifyDto>, Problem> {
    if !who.may_read_all_audit(&state.core.catalog()) {
        return Err(CoreError::Forbidden("only admins and auditors may verify the whole audit log").into());
    }
    let report = state.core.verify_audit().await?;
    Ok(Json(AuditVerifyDto {
        ok: report.ok,
        events: report.events,
        head_hash: report.head_hash,
        first_bad_seq: report.problem.as_ref().map(|p| p.seq),
        problem: report.problem.map(|p| p.message),
    }))
}
