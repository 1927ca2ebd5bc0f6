//! LDAP: one paged subtree search in an upstream directory (verified TLS), each entry a row.

use super::*;

/// Reads `base_dn` with one paged subtree search (pages of [`LDAP_PAGE_SIZE`]) for `filter`
/// (default [`DEFAULT_LDAP_FILTER`]), all user attributes. Each entry becomes a [`Row`]
/// numbered by its position: every attribute (name as the server returns it) with its values
/// joined by `\n`, plus `dn`. Values that are not UTF-8 (photos, certificates) are base64.
///
/// Binds as `bind_dn` with `password` when given, anonymously otherwise. `ldaps://` URLs use
/// TLS, `start_tls` upgrades an `ldap://` connection; both verify the server against `ca_pem`
/// when given (the system's CAs otherwise). Connecting may take [`CONNECT_TIMEOUT`], each
/// operation [`OPERATION_TIMEOUT`].
pub async fn read_ldap(
    opts: &LdapReader,
    password: Option<&str>,
    ca_pem: Option<&str>,
) -> Result<Vec<Row>, ReadError> {
    crate::telemetry::call(
        "import",
        "ldap search",
        search_source(opts, password, ca_pem),
        Result::is_ok,
    )
    .await
}

async fn search_source(
    opts: &LdapReader,
    password: Option<&str>,
    ca_pem: Option<&str>,
) -> Result<Vec<Row>, ReadError> {
    let url = opts.url.as_str();
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    let ldaps = match scheme.as_deref() {
        Some("ldap") => false,
        Some("ldaps") => true,
        _ => {
            return Err(ReadError::Settings(format!(
                "reader.ldap.url {url:?} must start with ldap:// or ldaps://"
            )));
        }
    };
    if ldaps && opts.start_tls {
        return Err(ReadError::Settings(format!(
            "reader.ldap.startTLS is set for the ldaps:// URL {url}: ldaps is TLS already; use one of them"
        )));
    }
    if ca_pem.is_some() && !ldaps && !opts.start_tls {
        return Err(ReadError::Settings(format!(
            "reader.ldap.caRef is set but the connection to {url} would not use TLS: use an ldaps:// URL or startTLS"
        )));
    }
    let bind = match (opts.bind_dn.as_deref(), password) {
        (Some(dn), Some(pw)) if !pw.is_empty() => Some((dn, pw)),
        (Some(dn), _) => {
            return Err(ReadError::Settings(format!(
                "reader.ldap.bindDN {dn} is set but no bind password was given (bindPasswordRef); an empty password would be an unauthenticated bind"
            )));
        }
        (None, Some(_)) => {
            return Err(ReadError::Settings(
                "a bind password was given without reader.ldap.bindDN".into(),
            ));
        }
        (None, None) => None,
    };

    let mut settings = ldap3::LdapConnSettings::new()
        .set_conn_timeout(CONNECT_TIMEOUT)
        .set_starttls(opts.start_tls);
    if let Some(pem) = ca_pem {
        let tls = tls_config(pem).map_err(|message| ReadError::LdapTls {
            url: url.to_string(),
            message,
        })?;
        settings = settings.set_config(tls);
    }
    let tls = ldaps || opts.start_tls;
    let connect = ldap3::LdapConnAsync::with_settings(settings, url);
    let (conn, mut ldap) = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Err(_) => {
            return Err(ReadError::LdapUnreachable {
                url: url.to_string(),
                message: format!("no connection within {} s", CONNECT_TIMEOUT.as_secs()),
            });
        }
        Ok(Err(e)) => return Err(connect_error(url, tls, e)),
        Ok(Ok(pair)) => pair,
    };
    ldap3::drive!(conn);

    if let Some((dn, pw)) = bind {
        let result = ldap
            .with_timeout(OPERATION_TIMEOUT)
            .simple_bind(dn, pw)
            .await
            .map_err(|e| ReadError::LdapUnreachable {
                url: url.to_string(),
                message: format!("the bind got no answer: {e}"),
            })?;
        if result.rc != 0 {
            let message = match result.rc {
                49 => "invalid credentials (wrong bind DN or password, or the account is locked)"
                    .to_string(),
                rc => format!("result code {rc}: {}", result.text),
            };
            return Err(ReadError::LdapBind {
                url: url.to_string(),
                dn: dn.to_string(),
                message,
            });
        }
    }

    let rows = search(&mut ldap, opts).await;
    let _ = ldap.unbind().await;
    rows
}

/// The paged search of [`read_ldap`] on a bound connection.
pub(super) async fn search(
    ldap: &mut ldap3::Ldap,
    opts: &LdapReader,
) -> Result<Vec<Row>, ReadError> {
    use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
    let url = opts.url.as_str();
    let base = opts.base_dn.as_str();
    let filter = opts
        .filter
        .as_deref()
        .filter(|f| !f.trim().is_empty())
        .unwrap_or(DEFAULT_LDAP_FILTER);
    let failed = |message: String| ReadError::LdapSearch {
        url: url.to_string(),
        base: base.to_string(),
        message,
    };
    let search_error = |e: ldap3::LdapError| match e {
        ldap3::LdapError::FilterParsing => failed(format!("the filter {filter:?} is not valid")),
        ldap3::LdapError::LdapResult { result } if result.rc == 32 => ReadError::LdapNoSuchBase {
            url: url.to_string(),
            base: base.to_string(),
        },
        ldap3::LdapError::Timeout { .. } => failed(format!(
            "no answer within {} s",
            OPERATION_TIMEOUT.as_secs()
        )),
        e => failed(e.to_string()),
    };
    let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![
        Box::new(EntriesOnly::new()),
        Box::new(PagedResults::new(LDAP_PAGE_SIZE)),
    ];
    let mut stream = ldap
        .with_timeout(OPERATION_TIMEOUT)
        .streaming_search_with(adapters, base, ldap3::Scope::Subtree, filter, vec!["*"])
        .await
        .map_err(search_error)?;
    let mut rows = Vec::new();
    let mut size = 0usize;
    while let Some(entry) = stream.next().await.map_err(search_error)? {
        let entry = ldap3::SearchEntry::construct(entry);
        let mut fields = BTreeMap::new();
        for (name, values) in entry.attrs {
            fields.insert(name, values.join("\n"));
        }
        for (name, values) in entry.bin_attrs {
            let b64 = values
                .iter()
                .map(|v| base64::engine::general_purpose::STANDARD.encode(v));
            // An attribute can have UTF-8 and binary values; keep both.
            let text: Vec<String> = fields
                .remove(&name)
                .into_iter()
                .chain(b64)
                .collect::<Vec<_>>();
            fields.insert(name, text.join("\n"));
        }
        fields.insert("dn".to_string(), entry.dn);
        size += fields.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        if size > MAX_INPUT_BYTES {
            let _ = stream.finish().await;
            return Err(ReadError::TooLarge {
                what: "LDAP search result",
            });
        }
        rows.push(Row {
            number: rows.len() + 1,
            fields,
        });
    }
    let result = stream.finish().await;
    let detail = if result.text.is_empty() {
        String::new()
    } else {
        format!(" ({})", result.text)
    };
    match result.rc {
        0 => Ok(rows),
        32 => Err(ReadError::LdapNoSuchBase {
            url: url.to_string(),
            base: base.to_string(),
        }),
        4 => Err(failed(format!(
            "the server's size limit was exceeded{detail}; a partial list is not read: raise the bind DN's size limit (for paged searches too)"
        ))),
        11 => Err(failed(format!(
            "an administrative limit was exceeded{detail}; raise it for the bind DN"
        ))),
        50 => Err(failed(format!(
            "insufficient access{detail}: the bind DN may not search there"
        ))),
        rc => Err(failed(format!("result code {rc}{detail}"))),
    }
}

/// An error while connecting: TLS/StartTLS trouble or an unreachable server.
pub(super) fn connect_error(url: &str, tls: bool, e: ldap3::LdapError) -> ReadError {
    let url = url.to_string();
    match e {
        ldap3::LdapError::Rustls { .. } | ldap3::LdapError::DNSName { .. } => ReadError::LdapTls {
            url,
            message: e.to_string(),
        },
        ldap3::LdapError::LdapResult { result } => ReadError::LdapTls {
            url,
            message: format!(
                "the server refused StartTLS (result code {}: {})",
                result.rc,
                if result.text.is_empty() {
                    "no TLS configured?"
                } else {
                    &result.text
                }
            ),
        },
        ldap3::LdapError::Io { source } if tls && is_tls_failure(&source) => ReadError::LdapTls {
            url,
            message: format!(
                "the handshake failed: {source} (does the server speak TLS on this port?)"
            ),
        },
        e => ReadError::LdapUnreachable {
            url,
            message: e.to_string(),
        },
    }
}

/// Whether an I/O error came from the TLS handshake rather than the network: rustls refused
/// the server (certificate, protocol), or the server hung up on the ClientHello.
pub(super) fn is_tls_failure(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>())
        || matches!(
            e.kind(),
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
        )
}

pub(super) fn tls_config(pem: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    crate::tls::trusting(pem, "the CA PEM")
}
