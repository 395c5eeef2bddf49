//! `AuthStore` on SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{micros, now_micros, SqliteStore};
use crate::{
    model::client::ClientRecord,
    store::{client_record, AuthStore, ClientRow, StoreError},
};

/// Seen `jti`s are kept this long past their expiry (microseconds), beyond any clock skew.
const JTI_GRACE_MICROS: i64 = 10 * 60 * 1_000_000;

#[async_trait]
impl AuthStore for SqliteStore {
    async fn put_client(&self, client: &ClientRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO auth_clients (client_id, jwks, jwks_url, scopes, created_at) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (client_id) DO UPDATE SET jwks = excluded.jwks, jwks_url = excluded.jwks_url, scopes = excluded.scopes",
        )
        .bind(&client.client_id)
        .bind(&client.jwks)
        .bind(&client.jwks_url)
        .bind(&client.scopes)
        .bind(now_micros())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn client(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError> {
        let row: Option<ClientRow> = sqlx::query_as("SELECT client_id, jwks, jwks_url, scopes FROM auth_clients WHERE client_id = ?")
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(client_record))
    }

    async fn clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
        let rows: Vec<ClientRow> = sqlx::query_as("SELECT client_id, jwks, jwks_url, scopes FROM auth_clients ORDER BY client_id")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(client_record).collect())
    }

    async fn remove_client(&self, client_id: &str) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM auth_clients WHERE client_id = ?").bind(client_id).execute(&self.pool).await?;
        Ok(result.rows_affected() > 0)
    }

    async fn has_clients(&self) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM auth_clients)").fetch_one(&self.pool).await?)
    }

    async fn remember_jti(&self, client_id: &str, jti: &str, expires_at: DateTime<Utc>) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM auth_seen_jti WHERE expires_at < ?").bind(now_micros() - JTI_GRACE_MICROS).execute(&mut *tx).await?;
        let inserted = sqlx::query("INSERT INTO auth_seen_jti (client_id, jti, expires_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING")
            .bind(client_id)
            .bind(jti)
            .bind(micros(expires_at))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(inserted.rows_affected() > 0)
    }

    async fn signing_key(&self, candidate: &str) -> Result<String, StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("INSERT INTO auth_signing_key (id, pkcs8) VALUES (1, ?) ON CONFLICT DO NOTHING").bind(candidate).execute(&mut *tx).await?;
        let key = sqlx::query_scalar("SELECT pkcs8 FROM auth_signing_key WHERE id = 1").fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok(key)
    }
}
