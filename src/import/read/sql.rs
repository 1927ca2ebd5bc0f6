//! SQL: one query on MySQL/MariaDB in a read-only session, each result row a row.

use super::*;

/// Runs `query` on the MySQL/MariaDB server of `dsn` (`mysql://user:password@host:port/db`)
/// in a read-only session and returns each result row as a [`Row`] numbered by its position:
/// column name → value as text (NULL → empty string; numbers, dates and times as MySQL prints
/// them; bytes that are not UTF-8 as base64).
///
/// The query must return exactly one result set with uniquely named columns. Connecting may
/// take [`CONNECT_TIMEOUT`], the query with its result [`OPERATION_TIMEOUT`]. The DSN's
/// password appears in no message.
pub async fn read_sql(dsn: &str, query: &str) -> Result<Vec<Row>, ReadError> {
    crate::telemetry::call(
        "import",
        "sql query",
        query_source(dsn, query),
        Result::is_ok,
    )
    .await
}

async fn query_source(dsn: &str, query: &str) -> Result<Vec<Row>, ReadError> {
    let secret = dsn_password(dsn);
    let redact = |message: String| match &secret {
        Some(pw) if !pw.is_empty() => message.replace(pw.as_str(), "***"),
        _ => message,
    };
    let opts = mysql_async::Opts::from_url(dsn).map_err(|e| {
        // The DSN holds a password: name the problem, never the URL.
        ReadError::SqlDsn(redact(match e {
            mysql_async::UrlError::Parse(p) => p.to_string(),
            mysql_async::UrlError::UnsupportedScheme { scheme } => {
                format!("the scheme {scheme:?} is not mysql")
            }
            mysql_async::UrlError::UnknownParameter { param } => {
                format!("unknown parameter {param:?}")
            }
            mysql_async::UrlError::InvalidParamValue { param, .. } => {
                format!("invalid value of the parameter {param:?}")
            }
            other => other.to_string(),
        }))
    })?;
    let server = format!(
        "{}:{}/{}",
        opts.ip_or_hostname(),
        opts.tcp_port(),
        opts.db_name().unwrap_or("")
    );
    let user = opts.user().unwrap_or("").to_string();
    let unreachable = |message: String| ReadError::SqlUnreachable {
        server: server.clone(),
        message,
    };
    let mut conn = match tokio::time::timeout(CONNECT_TIMEOUT, mysql_async::Conn::new(opts)).await {
        Err(_) => {
            return Err(unreachable(format!(
                "no connection within {} s",
                CONNECT_TIMEOUT.as_secs()
            )));
        }
        Ok(Err(mysql_async::Error::Server(s))) => {
            return Err(ReadError::SqlLogin {
                server: server.clone(),
                user,
                message: redact(format!("error {}: {}", s.code, s.message)),
            });
        }
        Ok(Err(e)) => return Err(unreachable(redact(sql_message(e)))),
        Ok(Ok(conn)) => conn,
    };
    let result = tokio::time::timeout(OPERATION_TIMEOUT, run_query(&mut conn, query, &server))
        .await
        .unwrap_or_else(|_| {
            Err(ReadError::SqlQuery {
                server: server.clone(),
                message: format!("no result within {} s", OPERATION_TIMEOUT.as_secs()),
            })
        });
    // After a timeout the connection may be stuck mid-result: do not wait for it long.
    let _ = tokio::time::timeout(CONNECT_TIMEOUT, conn.disconnect()).await;
    result.map_err(|e| match e {
        ReadError::SqlQuery { server, message } => ReadError::SqlQuery {
            server,
            message: redact(message),
        },
        e => e,
    })
}

/// The query of [`read_sql`] on an open connection.
pub(super) async fn run_query(
    conn: &mut mysql_async::Conn,
    query: &str,
    server: &str,
) -> Result<Vec<Row>, ReadError> {
    use mysql_async::prelude::Queryable;
    let failed = |message: String| ReadError::SqlQuery {
        server: server.to_string(),
        message,
    };
    let error = |e: mysql_async::Error| failed(sql_message(e));
    // Writes fail in a read-only session; an import only reads.
    conn.query_drop("SET SESSION TRANSACTION READ ONLY")
        .await
        .map_err(error)?;
    let mut result = conn.query_iter(query).await.map_err(error)?;
    let columns = result.columns_ref().to_vec();
    if columns.is_empty() {
        let _ = result.drop_result().await;
        return Err(failed(
            "the statement returned no result set (an import reads with SELECT)".into(),
        ));
    }
    let mut names = Vec::with_capacity(columns.len());
    let mut first_of: BTreeMap<String, usize> = BTreeMap::new();
    for (i, c) in columns.iter().enumerate() {
        let name = c.name_str().into_owned();
        if let Some(first) = first_of.insert(name.clone(), i + 1) {
            return Err(ReadError::SqlDuplicateColumn {
                server: server.to_string(),
                name,
                first,
                second: i + 1,
            });
        }
        names.push(name);
    }
    let mut rows = Vec::new();
    let mut size = 0usize;
    while let Some(row) = result.next().await.map_err(error)? {
        let mut fields = BTreeMap::new();
        for (name, value) in names.iter().zip(row.unwrap()) {
            let text = value_text(value);
            size += name.len() + text.len();
            fields.insert(name.clone(), text);
        }
        if size > MAX_INPUT_BYTES {
            return Err(ReadError::TooLarge {
                what: "SQL query result",
            });
        }
        rows.push(Row {
            number: rows.len() + 1,
            fields,
        });
    }
    // Several statements are a mistake, not more rows.
    if !result.is_empty() {
        result.drop_result().await.map_err(error)?;
        return Err(failed(
            "the query holds more than one statement; give one SELECT".into(),
        ));
    }
    Ok(rows)
}

/// A driver error as a message without the DSN.
pub(super) fn sql_message(e: mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Server(s) => format!("error {}: {}", s.code, s.message),
        mysql_async::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}

/// A column value as text, as the mysql client prints it.
pub(super) fn value_text(value: mysql_async::Value) -> String {
    use mysql_async::Value;
    match value {
        Value::NULL => String::new(),
        Value::Bytes(b) => String::from_utf8(b)
            .unwrap_or_else(|e| base64::engine::general_purpose::STANDARD.encode(e.into_bytes())),
        Value::Int(n) => n.to_string(),
        Value::UInt(n) => n.to_string(),
        Value::Float(x) => x.to_string(),
        Value::Double(x) => x.to_string(),
        Value::Date(y, mo, d, h, mi, s, us) => {
            let mut t = format!("{y:04}-{mo:02}-{d:02}");
            if (h, mi, s, us) != (0, 0, 0, 0) {
                t.push_str(&format!(" {h:02}:{mi:02}:{s:02}"));
                if us != 0 {
                    t.push_str(&format!(".{us:06}"));
                }
            }
            t
        }
        Value::Time(negative, days, h, mi, s, us) => {
            let hours = u64::from(days) * 24 + u64::from(h);
            let mut t = format!(
                "{}{hours:02}:{mi:02}:{s:02}",
                if negative { "-" } else { "" }
            );
            if us != 0 {
                t.push_str(&format!(".{us:06}"));
            }
            t
        }
    }
}

/// The password in a `scheme://user:password@host…` DSN as written (percent-encoded), for
/// redacting it from messages.
pub(super) fn dsn_password(dsn: &str) -> Option<String> {
    let rest = dsn.split_once("://").map_or(dsn, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let userinfo = authority.rsplit_once('@')?.0;
    Some(userinfo.split_once(':')?.1.to_string())
}
