//! The IPFS adapter contract (`pinhive_ipfs::contract`) for the Kubo RPC client, against a
//! real js-ipfs daemon per check.

use std::sync::Arc;
use std::time::Duration;

use pinhive_integration_tests::IpfsDaemon;
use pinhive_ipfs::contract::Fixture;
use pinhive_ipfs::{IpfsApi, KuboClient};

struct Daemon {
    daemon: IpfsDaemon,
    client: Arc<KuboClient>,
}

#[async_trait::async_trait]
impl Fixture for Daemon {
    fn api(&self) -> Arc<dyn IpfsApi> {
        self.client.clone()
    }

    async fn content(&self, seed: &str) -> String {
        let data = format!("ipfs contract content: {seed}");
        self.daemon
            .add(data.as_bytes(), 1)
            .await
            .expect("add content to the daemon")
    }
}

async fn fresh() -> (Daemon, ()) {
    let daemon = IpfsDaemon::start().await.expect("a js-ipfs daemon");
    let client = Arc::new(
        KuboClient::new(&daemon.api_url, Duration::from_secs(30)).expect("a Kubo RPC client"),
    );
    (Daemon { daemon, client }, ())
}

pinhive_ipfs::ipfs_contract_tests!(fresh);
