//! The contract every [`IpfsApi`] implementation passes: the Kubo client against a real
//! js-ipfs daemon (integration-tests/tests/ipfs_contract.rs) and the simulated node (this
//! crate's tests). One `#[tokio::test]` per check ([`ipfs_contract_tests!`]), so one failure
//! does not hide the others.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;

use crate::IpfsApi;

/// A node under test and a way to give it content.
#[async_trait]
pub trait Fixture: Send + Sync {
    fn api(&self) -> Arc<dyn IpfsApi>;
    /// The CID of content the node holds (unpinned) and can pin at once; `seed` makes it
    /// unique.
    async fn content(&self, seed: &str) -> String;
}

const PIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The canonical spelling of a CID (nodes list CIDv1 in the base they like).
fn canonical(cid: &str) -> String {
    pinhive_domain::canonical_cid(cid).unwrap_or_else(|_| cid.to_string())
}

async fn listed(api: &dyn IpfsApi) -> BTreeSet<String> {
    let mut pins = api.pin_ls_all().await.expect("pin/ls of every pin");
    let mut listed = BTreeSet::new();
    while let Some(pin) = pins.next().await {
        listed.insert(canonical(&pin.expect("a listed pin")));
    }
    listed
}

/// `id` names the node; `repo/stat` answers.
pub async fn identity_and_space(fixture: &dyn Fixture) {
    let api = fixture.api();
    let identity = api.id().await.expect("id");
    assert!(!identity.peer_id.is_empty());
    assert!(!identity.addresses.is_empty(), "{identity:?}");
    api.repo_stat().await.expect("repo/stat");
}

/// A pinned CID is pinned, an unpinned one is not; pinning twice is one pin.
pub async fn pin_then_ls(fixture: &dyn Fixture) {
    let api = fixture.api();
    let (pinned, other) = (
        fixture.content("pinned").await,
        fixture.content("other").await,
    );
    api.pin_add(&pinned, PIN_TIMEOUT).await.expect("pin/add");
    api.pin_add(&pinned, PIN_TIMEOUT)
        .await
        .expect("pin/add again");
    assert!(api.pin_ls(&pinned).await.expect("pin/ls"));
    assert!(!api.pin_ls(&other).await.expect("pin/ls of an unpinned CID"));
}

/// Unpinning removes the pin; unpinning what is not pinned succeeds (idempotent).
pub async fn pin_rm_is_idempotent(fixture: &dyn Fixture) {
    let api = fixture.api();
    let cid = fixture.content("removed").await;
    api.pin_add(&cid, PIN_TIMEOUT).await.expect("pin/add");
    api.pin_rm(&cid).await.expect("pin/rm");
    assert!(!api.pin_ls(&cid).await.expect("pin/ls"));
    api.pin_rm(&cid).await.expect("pin/rm of an unpinned CID");
}

/// The streamed listing holds every recursive pin and nothing unpinned.
pub async fn listing_streams_every_pin(fixture: &dyn Fixture) {
    let api = fixture.api();
    let mut pinned = BTreeSet::new();
    for i in 0..5 {
        let cid = fixture.content(&format!("listed {i}")).await;
        api.pin_add(&cid, PIN_TIMEOUT).await.expect("pin/add");
        pinned.insert(canonical(&cid));
    }
    let unpinned = canonical(&fixture.content("not listed").await);
    let removed = fixture.content("removed from the list").await;
    api.pin_add(&removed, PIN_TIMEOUT).await.expect("pin/add");
    api.pin_rm(&removed).await.expect("pin/rm");

    let listed = listed(api.as_ref()).await;
    assert!(
        pinned.is_subset(&listed),
        "{pinned:?} not all in {listed:?}"
    );
    assert!(!listed.contains(&unpinned));
    assert!(!listed.contains(&canonical(&removed)));
}

/// `block/stat` reads a held root block, and fails (in bounded time) for one the node lacks.
pub async fn block_stat_of_held_and_absent_roots(fixture: &dyn Fixture) {
    let api = fixture.api();
    let held = fixture.content("a held block").await;
    api.pin_add(&held, PIN_TIMEOUT).await.expect("pin/add");
    assert!(api.block_stat(&held).await.expect("block/stat") > 0);
    // A CID of content no node has (its digest is of bytes nobody added).
    let absent = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku";
    assert!(api.block_stat(absent).await.is_err());
}

/// Declares one `#[tokio::test]` per contract check, each on a fresh fixture from `$fresh` (an
/// async function returning the fixture and whatever must outlive it).
#[macro_export]
macro_rules! ipfs_contract_tests {
    ($fresh:path) => {
        $crate::ipfs_contract_tests!(@each $fresh;
            identity_and_space,
            pin_then_ls,
            pin_rm_is_idempotent,
            listing_streams_every_pin,
            block_stat_of_held_and_absent_roots
        );
    };
    (@each $fresh:path; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                let (fixture, _keep) = $fresh().await;
                $crate::contract::$check(&fixture).await;
            }
        )*
    };
}

#[cfg(test)]
mod simulated {
    use super::*;
    use crate::SimulatedIpfs;

    struct Simulated(Arc<SimulatedIpfs>);

    #[async_trait]
    impl Fixture for Simulated {
        fn api(&self) -> Arc<dyn IpfsApi> {
            self.0.clone()
        }

        async fn content(&self, seed: &str) -> String {
            use sha2::Digest;
            // A CIDv1 (raw, sha2-256) of `seed`: the simulated node can pin any CID.
            let digest = sha2::Sha256::digest(seed.as_bytes());
            let hash = cid::multihash::Multihash::<64>::wrap(0x12, &digest).expect("a sha2-256");
            cid::Cid::new_v1(0x55, hash).to_string()
        }
    }

    async fn fresh() -> (Simulated, ()) {
        (
            Simulated(Arc::new(SimulatedIpfs::new("sim", Duration::ZERO))),
            (),
        )
    }

    crate::ipfs_contract_tests!(fresh);
}
