//! The portal's page chrome and shared pieces, in maud (which escapes every
//! interpolated value).

use ajar_core::RequestView;
use ajar_domain::{Request, RequestState};
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

use super::session::Session;

/// Which navigation entry a page belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Targets,
    Access,
    Approvals,
    Admin,
    Audit,
    None,
}

pub fn page(title: &str, nav: Nav, session: Option<&Session>, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · ajar" }
                link rel="stylesheet" href="/static/app.css";
                script src="/static/app.js" defer {}
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    a class="brand" href="/" { span class="brand-mark" aria-hidden="true" { "◧" } " ajar" }
                    @if let Some(s) = session {
                        nav aria-label="Main" {
                            (nav_link("/targets", "Request access", nav == Nav::Targets))
                            (nav_link("/access", "My access", nav == Nav::Access))
                            (nav_link("/approvals", "Approvals", nav == Nav::Approvals))
                            @if s.admin { (nav_link("/admin", "Admin", nav == Nav::Admin)) }
                            (nav_link("/audit", "Audit", nav == Nav::Audit))
                        }
                        div class="who" {
                            span { "Signed in as " strong { (s.principal.name) } }
                            form method="post" action="/logout" {
                                (csrf_field(s))
                                button class="button quiet" type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main id="main" { (content) }
                div id="live-status" class="sr-only" role="status" aria-live="polite" {}
                footer class="foot" { "ajar — just-in-time network access" }
            }
        }
    }
}

fn nav_link(href: &str, label: &str, current: bool) -> Markup {
    html! {
        @if current { a href=(href) aria-current="page" { (label) } } @else { a href=(href) { (label) } }
    }
}

pub fn csrf_field(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf()); }
}

pub fn notice(kind: &str, text: &str) -> Markup {
    html! { div class={ "notice " (kind) } role=(if kind == "error" { "alert" } else { "status" }) { (text) } }
}

pub fn state_badge(state: RequestState) -> Markup {
    let label = match state {
        RequestState::Pending => "Waiting for approval",
        RequestState::Active => "Active",
        RequestState::Expired => "Expired",
        RequestState::Revoked => "Revoked",
        RequestState::Released => "Released",
        RequestState::Denied => "Denied",
        RequestState::Cancelled => "Cancelled",
        RequestState::TimedOut => "Timed out",
    };
    html! { span class={ "badge state-" (state.as_str()) } { (label) } }
}

pub fn clock(at: DateTime<Utc>) -> Markup {
    html! { time datetime=(at.to_rfc3339()) title=(at.format("%Y-%m-%d %H:%M:%S UTC")) { (at.format("%H:%M UTC")) } }
}

pub fn when(at: DateTime<Utc>) -> Markup {
    html! { time datetime=(at.to_rfc3339()) { (at.format("%Y-%m-%d %H:%M:%S UTC")) } }
}

/// A countdown the page script keeps current; the server renders its first
/// value so that it reads right without JavaScript.
pub fn countdown(end: DateTime<Utc>, now: DateTime<Utc>) -> Markup {
    html! { span class="countdown" data-ends-at=(end.to_rfc3339()) { (remaining(end, now)) } }
}

pub fn remaining(end: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (end - now).num_seconds();
    if secs <= 0 {
        return "ending now".to_owned();
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s left"),
        (0, _) => format!("{m}m {s:02}s left"),
        _ => format!("{h}h {m:02}m left"),
    }
}

/// The one-line summary of a request used in every list.
pub fn request_summary(r: &Request) -> Markup {
    html! {
        div class="req-head" {
            span class="req-target" { (r.target) }
            (state_badge(r.state))
        }
        dl class="facts" {
            dt { "Requested by" } dd { (r.requester) }
            dt { "For" } dd { (r.duration) }
            dt { "From" } dd { code { (r.source) } }
            dt { "Reason" } dd { @if r.reason.is_empty() { span class="muted" { "none given" } } @else { (r.reason) } }
            dt { "Request" } dd { code { (r.id) } }
        }
    }
}

/// Where to connect, when the path is open.
pub fn connect_line(view: &RequestView, addr: &str, host_fallback: &str, now: DateTime<Utc>) -> Markup {
    let r = &view.request;
    html! {
        @if let (Some(c), Some(end)) = (&view.connect, r.ends_at) {
            p class="connect" {
                "Connect to "
                code class="addr" { (if c.host.is_empty() { host_fallback } else { &c.host }) ":" (c.port) }
                " from " code { (addr) } " until " (clock(end)) " — " (countdown(end, now))
            }
        } @else if r.state == RequestState::Active {
            p class="notice warn" {
                "The network path is " strong { (r.enforcement.status.as_str()) }
                @if let Some(e) = &r.enforcement.error { ": " (e) }
                ". ajar retries on its own; ask an admin if this stays."
            }
        }
    }
}

/// The script and style are served as files, so that the CSP needs no
/// 'unsafe-inline'.
pub const STYLESHEET: &str = include_str!("static/app.css");
pub const SCRIPT: &str = include_str!("static/app.js");

/// An empty-state paragraph.
pub fn empty(text: &str) -> Markup {
    html! { p class="empty" { (text) } }
}
