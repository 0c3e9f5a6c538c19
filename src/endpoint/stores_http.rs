//! `GET /stores/NAME` and `HEAD /stores/NAME`: a store's snapshot over plain HTTP
//! (docs/contract.md, "Stores over the wire").
//!
//! Owns the HTTP side of stores: admission with the socket's own `connect` and the
//! connect parameters of the query string (403 otherwise), `404` for a store the
//! application does not define, the weak `ETag: W/"<epoch>.<version>"` with
//! `Cache-Control: no-cache`, and `304` when `If-None-Match` names the current tag. The
//! body is the store's snapshot, encoded once per version and shared by every request.
//! Must not change a store.

use std::sync::Arc;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::socket::{ConnectInfo, Params};
use crate::store::Stores;
use crate::transport::Shared;

/// The route's handler (GET and HEAD; actix-web leaves the body out of a HEAD answer).
pub(super) async fn snapshot(
    req: HttpRequest,
    name: web::Path<String>,
    shared: web::Data<Arc<Shared>>,
    stores: web::Data<Stores>,
) -> HttpResponse {
    let params = Params::from_query(req.query_string());
    let info = ConnectInfo {
        peer: req.peer_addr(),
        transport: "http",
    };
    if let Err(refusal) = shared.socket.connect(&params, &info) {
        log::info!("GET /stores/{name}: refused: {refusal}");
        return HttpResponse::Forbidden().json(json!({"reason": "forbidden"}));
    }
    let Some(store) = stores.get(&name) else {
        return HttpResponse::NotFound().json(json!({"reason": "unknown store"}));
    };
    let snapshot = match store.snapshot().await {
        Ok(snapshot) => snapshot,
        Err(error) => {
            return HttpResponse::ServiceUnavailable().json(json!({"reason": error.reason()}))
        }
    };
    let etag = snapshot.etag();
    let fresh = req
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .any(|value| matches_tag(value, &etag));
    let mut response = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, "no-cache"));
    if fresh {
        return response.finish();
    }
    response
        .content_type("application/json")
        .body(snapshot.bytes())
}

/// Weak comparison (RFC 9110 §13.1.2) of an `If-None-Match` list with `etag`: `*`
/// matches anything, `W/` prefixes are ignored.
fn matches_tag(header: &HeaderValue, etag: &str) -> bool {
    let Ok(list) = header.to_str() else {
        return false;
    };
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    let ours = opaque(etag);
    list.split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || opaque(tag) == ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_compares_weakly() {
        let tag = r#"W/"e1.7""#;
        let header = |s: &'static str| HeaderValue::from_static(s);
        assert!(matches_tag(&header(r#"W/"e1.7""#), tag));
        assert!(matches_tag(&header(r#""e1.7""#), tag));
        assert!(matches_tag(&header(r#"W/"x.1", W/"e1.7""#), tag));
        assert!(matches_tag(&header("*"), tag));
        assert!(!matches_tag(&header(r#"W/"e1.6""#), tag));
        assert!(!matches_tag(&header(r#"W/"e1.70""#), tag));
        assert!(!matches_tag(&header(""), tag));
    }
}
