//! What every request asks of the client registry, remembered for `RECHECK`: whether any
//! client is registered (authorization on or off), and whether a token's client still is. A
//! status poll no longer waits for a database round trip behind a running export (issue 7);
//! registering the first client, or removing one, takes effect on every node within `RECHECK`.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::store::{AuthStore, StoreError};

pub const RECHECK: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct RegisteredClientsCache {
    any: Mutex<Option<(Instant, bool)>>,
    /// Clients found registered, and when. Only ids from tokens this server signed get here.
    clients: Mutex<HashMap<String, Instant>>,
}

impl RegisteredClientsCache {
    pub async fn any_client(&self, store: &dyn AuthStore) -> Result<bool, StoreError> {
        if let Some((at, any)) = *self.any.lock().expect("the registered clients cache lock is never poisoned")
            && at.elapsed() < RECHECK
        {
            return Ok(any);
        }
        let any = store.has_clients().await?;
        *self.any.lock().expect("the registered clients cache lock is never poisoned") = Some((Instant::now(), any));
        Ok(any)
    }

    pub async fn registered(&self, store: &dyn AuthStore, client_id: &str) -> Result<bool, StoreError> {
        let fresh = |at: &Instant| at.elapsed() < RECHECK;
        if self.clients.lock().expect("the registered clients cache lock is never poisoned").get(client_id).is_some_and(fresh) {
            return Ok(true);
        }
        let registered = store.client(client_id).await?.is_some();
        let mut clients = self.clients.lock().expect("the registered clients cache lock is never poisoned");
        if registered {
            clients.insert(client_id.to_owned(), Instant::now());
        } else {
            clients.remove(client_id);
        }
        Ok(registered)
    }
}
