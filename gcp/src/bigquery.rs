//! BigQuery through `gcp-bigquery-client`: a client with this crate's credentials (none for an emulator),
//! table schemas and the check that an existing table can take a set of columns, "ensure the dataset and
//! the table" (the sink at start-up, `fvision deploy`), and queries that follow every page.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use gcp_bigquery_client::error::BQError;
use gcp_bigquery_client::model::dataset::Dataset;
use gcp_bigquery_client::model::field_type::FieldType;
use gcp_bigquery_client::model::get_query_results_parameters::GetQueryResultsParameters;
use gcp_bigquery_client::model::query_request::QueryRequest;
use gcp_bigquery_client::model::table::Table;
use gcp_bigquery_client::model::table_field_schema::TableFieldSchema;
use gcp_bigquery_client::model::table_row::TableRow;
use gcp_bigquery_client::model::table_schema::TableSchema;

pub use gcp_bigquery_client::Client;

use crate::auth::{GoogleAuth, GoogleAuthError, SCOPE_BIGQUERY};
use crate::Change;

/// One column: name, type, and whether it is REPEATED (the one REPEATED column of this project's tables is
/// `top_k`, a record of label, class index and confidence).
pub type Column = (&'static str, FieldType, bool);

/// A client that could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The HTTP client.
    #[error("an HTTP client could not be built: {0}")]
    Http(#[source] reqwest::Error),
    /// The credentials (the message names the key file).
    #[error(transparent)]
    Credentials(#[from] GoogleAuthError),
    /// The BigQuery client refused the endpoint.
    #[error("a usable endpoint: {0}")]
    Endpoint(#[source] BQError),
}

/// An authenticator for emulators, which take any token: sends an empty one.
#[derive(Clone)]
struct NoAuth;

#[async_trait::async_trait]
impl gcp_bigquery_client::auth::Authenticator for NoAuth {
    async fn access_token(&self) -> Result<String, BQError> {
        Ok(String::new())
    }
}

/// The v2 API base of an emulator's root URL.
pub fn v2_base_url(endpoint: &str) -> String {
    format!("{}/bigquery/v2", endpoint.trim_end_matches('/'))
}

/// A client for `v2_base_url` (an emulator's, see [`v2_base_url`]; `None` is Google's): with the key file
/// when one is named, else without credentials for an emulator, else the application default credentials.
pub async fn client(
    v2_base_url: Option<&str>,
    credentials_file: Option<&Path>,
    timeout: Duration,
) -> Result<Client, ClientError> {
    let http = reqwest::Client::builder().timeout(timeout).build().map_err(ClientError::Http)?;
    let mut builder = gcp_bigquery_client::client_builder::ClientBuilder::new();
    builder.with_client(http);
    if let Some(base) = v2_base_url {
        builder.with_v2_base_url(base.to_string());
    }
    let authenticator: Arc<dyn gcp_bigquery_client::auth::Authenticator> = match (v2_base_url, credentials_file) {
        (Some(_), None) => Arc::new(NoAuth),
        (_, file) => Arc::new(GoogleAuth::new(file, &[SCOPE_BIGQUERY]).await?),
    };
    builder.build_from_authenticator(authenticator).await.map_err(ClientError::Endpoint)
}

/// Whether BigQuery said 404.
pub fn not_found(error: &BQError) -> bool {
    matches!(error, BQError::ResponseError { error } if error.error.code == 404)
}

/// The schema of `columns`.
pub fn schema_of(columns: Vec<Column>) -> TableSchema {
    let fields = columns
        .into_iter()
        .map(|(name, kind, repeated)| {
            let mut field = TableFieldSchema::new(name, kind);
            if repeated {
                field.mode = Some("REPEATED".into());
                field.fields = Some(vec![
                    TableFieldSchema::string("label"),
                    TableFieldSchema::new("class_index", FieldType::Int64),
                    TableFieldSchema::new("confidence", FieldType::Float64),
                ]);
            }
            field
        })
        .collect();
    TableSchema::new(fields)
}

/// The standard-SQL name of a type, so aliases (INTEGER/INT64, FLOAT/FLOAT64, BOOLEAN/BOOL, RECORD/STRUCT)
/// compare equal.
fn canonical(kind: &FieldType) -> &'static str {
    use FieldType::*;
    match kind {
        String => "STRING",
        Bytes => "BYTES",
        Integer | Int64 => "INT64",
        Float | Float64 => "FLOAT64",
        Numeric => "NUMERIC",
        Bignumeric => "BIGNUMERIC",
        Boolean | Bool => "BOOL",
        Timestamp => "TIMESTAMP",
        Date => "DATE",
        Time => "TIME",
        Datetime => "DATETIME",
        Record | Struct => "STRUCT",
        Geography => "GEOGRAPHY",
        Json => "JSON",
        Interval => "INTERVAL",
    }
}

/// Whether an existing table can take rows of `expected`: every column present with its type and
/// repetition. Pure; the error names the first column that is missing or differs. Extra columns are fine.
pub fn check_schema(table: &str, expected: Vec<Column>, actual: &[TableFieldSchema]) -> Result<(), String> {
    for (name, kind, repeated) in expected {
        let Some(field) = actual.iter().find(|f| f.name.eq_ignore_ascii_case(name)) else {
            let mode = if repeated { "REPEATED " } else { "" };
            return Err(format!(
                "table {table} has no column `{name}` ({mode}{}); add it or use create-table on a new table",
                canonical(&kind)
            ));
        };
        if canonical(&field.r#type) != canonical(&kind) {
            return Err(format!(
                "column `{name}` of table {table} is {}, expected {}",
                canonical(&field.r#type),
                canonical(&kind)
            ));
        }
        let is_repeated = field.mode.as_deref().is_some_and(|m| m.eq_ignore_ascii_case("REPEATED"));
        if is_repeated != repeated {
            let expected = if repeated { "REPEATED" } else { "NULLABLE or REQUIRED" };
            return Err(format!("column `{name}` of table {table} has mode {:?}, expected {expected}", field.mode));
        }
    }
    Ok(())
}

/// Why a dataset or a table is not there as needed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnsureError {
    /// BigQuery did not answer, or refused the lookup.
    #[error("a reachable BigQuery API: {0}")]
    Unreachable(#[source] BQError),
    /// It does not exist and may not be created.
    #[error("{what} does not exist")]
    Missing {
        /// The dataset or table.
        what: String,
    },
    /// Creating it failed.
    #[error("creating {what}: {source}")]
    Create {
        /// The dataset or table.
        what: String,
        /// BigQuery's answer.
        #[source]
        source: BQError,
    },
    /// The table exists but cannot take the rows (the message names the column).
    #[error("{0}")]
    Schema(String),
}

/// Looks the dataset up, and creates it when it is missing and `create` allows.
pub async fn ensure_dataset(
    client: &Client,
    project: &str,
    dataset: &str,
    create: bool,
) -> Result<Change, EnsureError> {
    match client.dataset().get(project, dataset).await {
        Ok(_) => Ok(Change::Exists),
        Err(e) if not_found(&e) && create => {
            client
                .dataset()
                .create(Dataset::new(project, dataset))
                .await
                .map_err(|source| EnsureError::Create { what: format!("dataset {project}.{dataset}"), source })?;
            Ok(Change::Created)
        }
        Err(e) if not_found(&e) => Err(EnsureError::Missing { what: format!("dataset {project}.{dataset}") }),
        Err(e) => Err(EnsureError::Unreachable(e)),
    }
}

/// The table of a dataset, as its name, the columns its rows need, and a description for when it is created.
#[derive(Debug, Clone)]
pub struct TableSpec<'a> {
    /// Project.
    pub project: &'a str,
    /// Dataset.
    pub dataset: &'a str,
    /// Table.
    pub table: &'a str,
    /// The columns rows are written with.
    pub columns: Vec<Column>,
    /// The description a created table gets.
    pub description: &'a str,
}

impl TableSpec<'_> {
    /// `project.dataset.table`, as SQL names it (in backticks).
    pub fn sql_ref(&self) -> String {
        format!("`{}.{}.{}`", self.project, self.dataset, self.table)
    }
}

/// Checks that the table exists with the columns, creating it when it is missing and `create` allows.
pub async fn ensure_table(client: &Client, spec: TableSpec<'_>, create: bool) -> Result<Change, EnsureError> {
    let table_ref = spec.sql_ref();
    match client.table().get(spec.project, spec.dataset, spec.table, None).await {
        Ok(found) => check_schema(&table_ref, spec.columns, found.schema.fields().as_deref().unwrap_or_default())
            .map(|()| Change::Exists)
            .map_err(EnsureError::Schema),
        Err(e) if not_found(&e) && create => {
            let table = Table::new(spec.project, spec.dataset, spec.table, schema_of(spec.columns))
                .description(spec.description);
            client.table().create(table).await.map_err(|source| EnsureError::Create { what: table_ref, source })?;
            Ok(Change::Created)
        }
        Err(e) if not_found(&e) => Err(EnsureError::Missing { what: table_ref }),
        Err(e) => Err(EnsureError::Unreachable(e)),
    }
}

/// Deletes the dataset with its tables; one that is already gone is fine.
pub async fn delete_dataset(client: &Client, project: &str, dataset: &str) -> Result<(), BQError> {
    match client.dataset().delete(project, dataset, true).await {
        Err(e) if not_found(&e) => Ok(()),
        other => other,
    }
}

/// Runs a query and returns every row (following pages).
pub async fn query(client: &Client, project: &str, sql: &str) -> Result<Vec<TableRow>, BQError> {
    let mut request = QueryRequest::new(sql);
    request.timeout_ms = Some(30_000);
    let response = client.job().query(project, request).await?;
    let mut rows = response.rows.unwrap_or_default();
    let job_id = response.job_reference.and_then(|r| r.job_id);
    let (mut complete, mut page) = (response.job_complete.unwrap_or(true), response.page_token);
    while !complete || page.is_some() {
        let Some(job_id) = &job_id else { break };
        let parameters =
            GetQueryResultsParameters { page_token: page.clone(), timeout_ms: Some(30_000), ..Default::default() };
        let more = client.job().get_query_results(project, job_id, parameters).await?;
        complete = more.job_complete.unwrap_or(true);
        if complete {
            rows.extend(more.rows.unwrap_or_default());
            page = more.page_token.filter(|t| !t.is_empty());
        }
    }
    Ok(rows)
}

/// The first column of every row, as strings.
pub fn first_column(rows: &[TableRow]) -> Vec<String> {
    rows.iter()
        .filter_map(|row| {
            row.columns
                .as_ref()?
                .first()?
                .value
                .as_ref()
                .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_check_names_the_missing_or_different_column() {
        let columns = || -> Vec<Column> {
            vec![
                ("label", FieldType::String, false),
                ("confidence", FieldType::Float64, false),
                ("processing_time_ms", FieldType::Int64, false),
                ("top_k", FieldType::Record, true),
            ]
        };
        let fields = schema_of(columns()).fields().clone().unwrap();
        assert_eq!(check_schema("t", columns(), &fields), Ok(()));
        let mut aliased = fields.clone();
        aliased[1].r#type = FieldType::Float;
        aliased[2].r#type = FieldType::Integer;
        assert_eq!(check_schema("t", columns(), &aliased), Ok(()));
        let without: Vec<_> = fields.iter().filter(|f| f.name != "label").cloned().collect();
        assert!(check_schema("t", columns(), &without).unwrap_err().contains("no column `label` (STRING)"));
        let mut flat = fields;
        flat[3].mode = None;
        assert!(check_schema("t", columns(), &flat).unwrap_err().contains("`top_k`"));
        assert_eq!(v2_base_url("http://127.0.0.1:9050/"), "http://127.0.0.1:9050/bigquery/v2");
    }
}
