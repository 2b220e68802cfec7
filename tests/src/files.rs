//! One check shared by the attachment suites (file system and S3): two
//! `im-client`s, one uploads with progress and sends the attachment, the
//! other receives the message and downloads the same bytes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use im_client::core::content::Content;
use im_client::core::{ConversationId, GroupId};
use im_client::{Client, Draft, Event};
use im_server::RunningServer;

use crate::{until, Api};

/// Uploads `bytes` as a PNG through `im-client` and has a second client
/// download them from the message it receives.
pub async fn round_trip_through_im_client(server: &RunningServer, bytes: Vec<u8>) {
    let api = Api::new(server);
    let (alice, bob) = (api.user("alice-files").await, api.user("bob-files").await);
    let conv = ConversationId::Group(GroupId(api.group(&alice, "files", &[&bob]).await));
    let connect = |token: &str| {
        Client::builder()
            .url(server.ws_url())
            .token(token)
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .unwrap()
    };
    let (a, _a_ev) = connect(&alice.token);
    let (b, mut b_ev) = connect(&bob.token);
    until(&mut b_ev, "Synced", |e| matches!(e, Event::Synced)).await;

    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let attachment = a
        .upload_with_progress(bytes.clone(), "image/png", Some("photo.png"), move |sent, total| {
            log.lock().unwrap().push((sent, total))
        })
        .await
        .expect("upload");
    assert!(attachment.matches(&bytes), "the attachment describes the bytes sent (S3: the size measured, the hash announced and checked by the store)");
    let seen = seen.lock().unwrap().clone();
    let total = bytes.len() as u64;
    assert!(seen.len() >= 2, "progress in steps: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0) && seen.last() == Some(&(total, total)), "{seen:?}");

    a.send_draft(conv, Draft::content(attachment.content(), "[image]")).await.expect("stored");
    let (event, _) =
        until(&mut b_ev, "the image", |e| matches!(e, Event::Message(m) if m.conv == conv)).await;
    let Event::Message(m) = event else { unreachable!() };
    let Ok(Content::Image(media)) = m.typed_content() else { panic!("not an image: {m:?}") };
    let id = media.attachment.expect("names the attachment");
    let mut steps = 0;
    let got = b.download_with_progress(&id, |_, _| steps += 1).await.expect("download");
    assert_eq!(got, bytes);
    assert!(steps >= 1);
    assert_eq!(media.sha256.as_deref(), Some(attachment.sha256.as_str()));
    a.shutdown().await;
    b.shutdown().await;
}
