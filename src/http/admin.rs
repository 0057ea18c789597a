//! The `/.larder/` namespace: larder's own endpoints (health, problem pages, the signed-in
//! account, bearer tokens, purchases, credits). Nothing can be stored here: a path that
//! names no endpoint is 404 for every method, and an endpoint's other methods are 405.
//! Bodies are JSON.
//!
//! Tokens made with a token are never wider than it: the same scope or a narrower one,
//! read-only if it is, expiring no later than it does.

use std::sync::Arc;
use std::time::Duration;

use crate::http::inbound::Inbound;
use http::header::{
    ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, ETAG, HeaderValue, LOCATION,
    X_CONTENT_TYPE_OPTIONS,
};
use http::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::access::Action;
use crate::auth::{Identity, TokenRequest, limit_of, new_token, now_seconds};
use crate::config::{Settings, parse_duration};
use crate::http::conditional::{Outcome, Preconditions, Validators};
use crate::http::page::{self, Asset};
use crate::http::payment::insufficient_credits;
use crate::http::problem::{Problem, Slug};
use crate::http::{
    App, Body, Live, Verb, allow_value, empty, forbidden, full, json_response, method_not_allowed,
    no_content_with, out_of_scope, read_json, unauthenticated,
};
use crate::meter::{Price, price_for};
use crate::path::ResourcePath;
use crate::state::{Bought, Purchase, TokenRecord};
use crate::store::Store;

/// What the endpoints need besides the request.
struct Context<'a, S: Store> {
    app: &'a App<S>,
    settings: Arc<Live>,
    identity: &'a Identity,
}

enum Endpoint {
    Health,
    Ready,
    Metrics,
    Problem(Slug),
    Asset(&'static Asset),
    Account,
    Tokens,
    Token(String),
    Purchases,
    Purchase(String),
    Credits(String),
}

impl Endpoint {
    fn allow(&self) -> &'static [Verb] {
        match self {
            Endpoint::Health
            | Endpoint::Ready
            | Endpoint::Metrics
            | Endpoint::Problem(_)
            | Endpoint::Asset(_)
            | Endpoint::Account => &[Verb::Get, Verb::Head, Verb::Options],
            Endpoint::Tokens | Endpoint::Purchases => {
                &[Verb::Get, Verb::Head, Verb::Post, Verb::Options]
            }
            Endpoint::Token(_) => &[Verb::Get, Verb::Head, Verb::Delete, Verb::Options],
            Endpoint::Purchase(_) => &[Verb::Get, Verb::Head, Verb::Options],
            Endpoint::Credits(_) => &[Verb::Post, Verb::Options],
        }
    }

    fn needs_account(&self, settings: &Settings) -> bool {
        match self {
            Endpoint::Health | Endpoint::Ready | Endpoint::Problem(_) | Endpoint::Asset(_) => false,
            Endpoint::Metrics => !settings.metrics_public,
            _ => true,
        }
    }
}

/// Answers a request for `/.larder/` + `rest` (the segments after `.larder`).
pub async fn respond<S: Store>(
    app: &App<S>,
    identity: &Identity,
    verb: Verb,
    rest: &[String],
    request: Request<Inbound>,
) -> Result<Response<Body>, Problem> {
    let context = &Context { app, settings: app.settings(), identity };
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let endpoint = match rest.as_slice() {
        ["health"] => Endpoint::Health,
        ["ready"] => Endpoint::Ready,
        ["metrics"] => Endpoint::Metrics,
        ["problems", slug] => {
            Endpoint::Problem(Slug::from_name(slug).ok_or_else(Problem::not_found)?)
        }
        ["ui", name] => Endpoint::Asset(page::asset(name).ok_or_else(Problem::not_found)?),
        ["account"] => Endpoint::Account,
        ["tokens"] => Endpoint::Tokens,
        ["tokens", id] => Endpoint::Token((*id).to_owned()),
        ["purchases"] => Endpoint::Purchases,
        ["purchases", id] => Endpoint::Purchase((*id).to_owned()),
        ["accounts", name, "credits"] => Endpoint::Credits((*name).to_owned()),
        _ => return Err(Problem::not_found()),
    };
    let account = context.identity.principal.account_owned();
    if endpoint.needs_account(&context.settings) && account.is_none() {
        return Err(unauthenticated(&context.settings.realm, None));
    }
    let allow = endpoint.allow();
    if !allow.contains(&verb) {
        return Err(method_not_allowed(verb, allow));
    }
    let account = account.unwrap_or_default();
    let response = match (endpoint, verb) {
        (_, Verb::Options) => no_content_with(ALLOW, allow_value(allow)),
        (Endpoint::Health, _) => json_response(StatusCode::OK, &json!({ "status": "ok" })),
        (Endpoint::Ready, _) => ready(app).await?,
        (Endpoint::Metrics, _) => metrics(context).await?,
        (Endpoint::Problem(slug), _) => problem_page(slug),
        (Endpoint::Asset(asset), _) => serve_asset(asset, &request),
        (Endpoint::Account, _) => {
            json_response(StatusCode::OK, &describe_account(context, account).await?)
        }
        (Endpoint::Tokens, Verb::Post) => create_token(context, &account, request).await?,
        (Endpoint::Purchases, Verb::Post) => buy(context, &account, request).await?,
        (Endpoint::Purchases, _) => {
            let bought = app.state_call(move |state| state.purchases_of(&account)).await?;
            let list: Vec<Value> = bought.iter().map(describe_purchase).collect();
            json_response(StatusCode::OK, &json!({ "purchases": list }))
        }
        (Endpoint::Purchase(id), _) => {
            let bought = app.state_call(move |state| state.purchases_of(&account)).await?;
            let purchase = bought.iter().find(|p| p.id == id).ok_or_else(Problem::not_found)?;
            json_response(StatusCode::OK, &describe_purchase(purchase))
        }
        (Endpoint::Credits(name), _) => top_up(context, name, request).await?,
        (Endpoint::Tokens, _) => {
            let tokens = app.state_call(move |state| state.tokens_of(&account)).await?;
            json_response(
                StatusCode::OK,
                &json!({ "tokens": tokens.iter().map(describe_token).collect::<Vec<_>>() }),
            )
        }
        (Endpoint::Token(id), Verb::Delete) => revoke_token(context, account, id).await?,
        (Endpoint::Token(id), _) => {
            let tokens = app.state_call(move |state| state.tokens_of(&account)).await?;
            let token = tokens.iter().find(|t| t.id == id).ok_or_else(Problem::not_found)?;
            json_response(StatusCode::OK, &describe_token(token))
        }
    };
    Ok(if verb == Verb::Head { strip_body(response) } else { response })
}

/// GET /.larder/ready: whether this node can serve now (for a load balancer): the database
/// and the store each tried at once, within `dependency_timeout`; 503 naming what is down.
/// `/.larder/health` stays a liveness answer that needs neither.
async fn ready<S: Store>(app: &App<S>) -> Result<Response<Body>, Problem> {
    let (database, store) = tokio::join!(app.state_call(|state| state.ping()), app.store().ready());
    let mut down = Vec::new();
    if database.is_err() {
        down.push("database");
    }
    match store {
        Ok(()) => {}
        Err(crate::store::Error::Unavailable(what)) => down.push(what),
        Err(e) => {
            tracing::error!("readiness: the store failed: {e}");
            down.push("store");
        }
    }
    let Some(first) = down.first() else {
        let mut response = json_response(StatusCode::OK, &json!({ "status": "ready" }));
        response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return Ok(response);
    };
    let mut problem = Problem::dependency_down(first);
    problem.member("down", json!(down));
    Err(problem)
}

/// GET /.larder/metrics: admins, or anyone when `metrics_public`.
async fn metrics<S: Store>(context: &Context<'_, S>) -> Result<Response<Body>, Problem> {
    if !context.settings.metrics_public && !context.identity.principal.unscoped_admin() {
        return Err(forbidden("Only admins may read the metrics, with a token of no scope."));
    }
    // Counted in memory: the metrics answer while the database cannot (its figures then
    // stay as last read).
    let from_database =
        context.app.state_call(|state| Ok((state.credit_totals()?, state.total_usage()?))).await;
    let dropped = crate::telemetry::dropped_lines();
    let text = context.app.metrics().render(from_database.ok(), dropped);
    Response::builder()
        .header(CONTENT_TYPE, crate::metrics::CONTENT_TYPE)
        .header(CONTENT_LENGTH, text.len())
        .header(CACHE_CONTROL, "no-store")
        .body(full(text))
        .map_err(|_| Problem::internal())
}

fn strip_body(response: Response<Body>) -> Response<Body> {
    let (parts, _) = response.into_parts();
    Response::from_parts(parts, empty())
}

fn rfc3339(seconds: i64) -> String {
    // RFC 3339 has four-digit years: a later date (none is stored now) shows as the last one.
    const LAST: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let time = std::time::UNIX_EPOCH + Duration::from_secs(seconds.clamp(0, LAST) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

fn describe_token(token: &TokenRecord) -> Value {
    json!({
        "id": token.id,
        "scope": token.scope,
        "read_only": token.read_only,
        "created_at": rfc3339(token.created),
        "expires_at": token.expires.map(rfc3339),
        "expired": token.expires.is_some_and(|at| at <= now_seconds()),
    })
}

async fn describe_account<S: Store>(
    context: &Context<'_, S>,
    name: String,
) -> Result<Value, Problem> {
    let configured = context.settings.accounts.get(&name);
    let plan = context.settings.meter.plan_of(&name);
    let who = name.clone();
    let (balance, used) =
        context.app.state_call(move |state| Ok((state.balance(&who)?, state.usage(&who)?))).await?;
    Ok(json!({
        "name": name,
        "admin": configured.is_some_and(|a| a.admin),
        "plan": plan.map(|(plan, _)| plan),
        "balance": balance,
        "currency": "credits",
        "storage": { "used": used, "quota": plan.map(|(_, terms)| terms.storage) },
        "signed_in_with": if context.identity.token.is_some() { "token" } else { "password" },
        "token": context.identity.token.as_deref().map(describe_token),
    }))
}

fn describe_purchase(purchase: &Purchase) -> Value {
    json!({
        "id": purchase.id,
        "path": purchase.path,
        "price": purchase.price,
        "at": rfc3339(purchase.at),
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BuyRequest {
    path: Option<String>,
}

/// POST /.larder/purchases: buys a priced resource the caller may read.
async fn buy<S: Store>(
    context: &Context<'_, S>,
    account: &str,
    request: Request<Inbound>,
) -> Result<Response<Body>, Problem> {
    let body: BuyRequest = read_json(request, context.app.metrics()).await?;
    let text = body
        .path
        .ok_or_else(|| Problem::new(Slug::BadRequest, "path: the resource to buy is missing."))?;
    let path = ResourcePath::parse(&text)?;
    let principal = &context.identity.principal;
    if principal.read_only() {
        return Err(out_of_scope(&context.settings.realm));
    }
    let app = context.app;
    app.authorize(principal, &path, Action::Read)?;
    let entry = match app.store().open(&path).await? {
        Some((entry, _)) if !entry.is_collection() && !path.is_collection() => entry,
        _ => return Err(Problem::not_found()),
    };
    let price = match price_for(
        &context.settings.rules,
        principal,
        path.segments(),
        entry.owner.as_deref(),
    ) {
        Price::Due(price) => price,
        Price::Free => {
            return Err(Problem::new(
                Slug::Conflict,
                "Nothing to buy: this resource has no price, or this account reads it free.",
            ));
        }
    };
    let (who, key) = (account.to_owned(), entry.path.as_key());
    let (status, purchase, balance) =
        match app.state_call(move |state| state.buy(&who, &key, price)).await? {
            Bought::New(purchase, balance) => (StatusCode::CREATED, purchase, balance),
            Bought::Existing(purchase, balance) => (StatusCode::OK, purchase, balance),
            Bought::Insufficient(balance) => return Err(insufficient_credits(price, balance)),
        };
    if status == StatusCode::CREATED {
        tracing::info!(account, path = %purchase.path, price, "purchase");
    }
    let mut document = describe_purchase(&purchase);
    document["balance"] = json!(balance);
    let mut response = json_response(status, &document);
    if let Ok(location) = HeaderValue::from_str(&format!("/.larder/purchases/{}", purchase.id)) {
        response.headers_mut().insert(LOCATION, location);
    }
    Ok(response)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopUp {
    amount: Option<i64>,
}

/// POST /.larder/accounts/NAME/credits (admins): adds credits (or takes them, never below 0).
async fn top_up<S: Store>(
    context: &Context<'_, S>,
    name: String,
    request: Request<Inbound>,
) -> Result<Response<Body>, Problem> {
    let principal = &context.identity.principal;
    if !principal.admin {
        return Err(forbidden("Only admins may change balances."));
    }
    if !principal.unscoped_admin() || principal.read_only() {
        return Err(out_of_scope(&context.settings.realm));
    }
    if !context.settings.accounts.contains_key(&name) {
        return Err(Problem::not_found());
    }
    let body: TopUp = read_json(request, context.app.metrics()).await?;
    let limit = crate::state::MAX_BALANCE as i64;
    let amount =
        body.amount.filter(|a| *a != 0 && a.unsigned_abs() <= limit as u64).ok_or_else(|| {
            Problem::new(
                Slug::BadRequest,
                format!("amount: a non-zero whole number of credits, at most {limit} either way."),
            )
        })?;
    let who = name.clone();
    match context.app.state_call(move |state| state.add_credits(&who, amount)).await? {
        Ok(balance) => {
            tracing::info!(account = %name, amount, balance, "credits changed");
            Ok(json_response(
                StatusCode::OK,
                &json!({ "account": name, "balance": balance, "currency": "credits" }),
            ))
        }
        Err(balance) => Err(Problem::new(
            Slug::Conflict,
            format!(
                "The balance is {balance}; a change of {amount} would take it below 0 or past {}.",
                crate::state::MAX_BALANCE
            ),
        )),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    scope: Option<String>,
    read_only: Option<bool>,
    /// Seconds, or a duration like "30d": read by hand, so that any other value is a 400
    /// that names the field.
    expires_in: Option<Value>,
}

async fn create_token<S: Store>(
    context: &Context<'_, S>,
    account: &str,
    request: Request<Inbound>,
) -> Result<Response<Body>, Problem> {
    let body: NewToken = read_json(request, context.app.metrics()).await?;
    let bad = |detail: String| Problem::new(Slug::BadRequest, detail);
    let scope = match &body.scope {
        Some(text) => Some(
            ResourcePath::parse(text)
                .map_err(|e| bad(format!("scope: `{text}` is not a path: {e}.")))?,
        ),
        None => None,
    };
    let expires_in = match &body.expires_in {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => {
            Some(parse_duration(text).map_err(|e| bad(format!("expires_in: {e}.")))?)
        }
        Some(value) => Some(value.as_u64().map(Duration::from_secs).ok_or_else(|| {
            bad(format!("expires_in: {value} is not a whole number of seconds or a duration."))
        })?),
    };
    if expires_in == Some(Duration::ZERO) {
        return Err(bad("expires_in: a token must live at least a second.".into()));
    }
    if expires_in.is_some_and(|d| d > crate::auth::MAX_LIFETIME) {
        return Err(bad(format!(
            "expires_in: a token lives at most 100 years ({} seconds).",
            crate::auth::MAX_LIFETIME.as_secs()
        )));
    }
    // Unless told, a token made with a read-only token is read-only too.
    let inherited = context.identity.token.as_ref().is_some_and(|t| t.read_only);
    let read_only = body.read_only.unwrap_or(inherited);
    let mut wanted = TokenRequest { scope, read_only, expires_in };
    // A token may only make tokens narrower than itself.
    if let Some(parent) = &context.identity.token {
        let limit = limit_of(parent);
        let parent_scope =
            ResourcePath::parse(&parent.scope).unwrap_or_else(|_| ResourcePath::root());
        let scope = wanted.scope.get_or_insert(parent_scope);
        if !scope.segments().starts_with(&limit.scope) || (limit.read_only && !wanted.read_only) {
            return Err(out_of_scope(&context.settings.realm));
        }
        if let Some(at) = parent.expires {
            let left = Duration::from_secs((at - now_seconds()).max(1) as u64);
            wanted.expires_in = Some(wanted.expires_in.map_or(left, |asked| asked.min(left)));
        }
    }
    let (record, secret) = new_token(account, &wanted);
    let stored = record.clone();
    context.app.state_call(move |state| state.insert_token(&stored)).await?;
    tracing::info!(account, token_id = %record.id, "token created");
    let mut document = describe_token(&record);
    document["token"] = Value::String(secret);
    let mut response = json_response(StatusCode::CREATED, &document);
    if let Ok(location) = HeaderValue::from_str(&format!("/.larder/tokens/{}", record.id)) {
        response.headers_mut().insert(LOCATION, location);
    }
    Ok(response)
}

async fn revoke_token<S: Store>(
    context: &Context<'_, S>,
    account: String,
    id: String,
) -> Result<Response<Body>, Problem> {
    // A limited token may revoke itself and tokens within its own reach, nothing wider.
    if let Some(current) = &context.identity.token
        && current.id != id
    {
        let limit = limit_of(current);
        if limit.read_only {
            return Err(out_of_scope(&context.settings.realm));
        }
        let (owner, wanted) = (account.clone(), id.clone());
        let tokens = context.app.state_call(move |state| state.tokens_of(&owner)).await?;
        if let Some(target) = tokens.iter().find(|t| t.id == wanted)
            && !limit_of(target).scope.starts_with(&limit.scope)
        {
            return Err(forbidden("A token may only revoke tokens within its own scope."));
        }
    }
    let who = account.clone();
    let forget = id.clone();
    let gone = context.app.state_call(move |state| state.delete_token(&who, &id)).await?;
    context.app.forget_token(&forget);
    if !gone {
        return Err(Problem::not_found());
    }
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}

/// A file of the web interface: revalidated on every use (`no-cache`), so a new binary's
/// assets are picked up at once and an unchanged one costs a 304.
fn serve_asset(asset: &Asset, request: &Request<Inbound>) -> Response<Body> {
    let etag = HeaderValue::from_str(&format!("\"{}\"", asset.etag))
        .unwrap_or(HeaderValue::from_static("\"\""));
    let validators = Validators { etag: Some(&asset.etag), modified: None };
    let fresh = Preconditions::parse(request.headers()).evaluate(true, Some(validators));
    let mut response = match fresh {
        Outcome::NotModified => {
            let mut response = Response::new(empty());
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            response
        }
        _ => {
            let mut response = Response::new(full(asset.bytes));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
            response.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(asset.bytes.len()));
            response
        }
    };
    let headers = response.headers_mut();
    headers.insert(ETAG, etag);
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

fn problem_page(slug: Slug) -> Response<Body> {
    let text = format!(
        "{} ({} {})\n\n{}\n",
        slug.title(),
        slug.status().as_u16(),
        slug.status().canonical_reason().unwrap_or(""),
        slug.explanation()
    );
    let len = text.len();
    let mut response = Response::new(full(text));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    response
}
