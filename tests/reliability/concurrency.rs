//! Four builds sharing one store and its base image while `rbuild prune` runs in a loop:
//! every build succeeds, nothing in use is deleted, fsck stays clean.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::{assert_store_sound, build, context, trials};
use crate::util::busybox::busybox;
use crate::util::{show, Rbuild};

#[test]
fn four_builds_and_prune_share_one_store() {
    let rb = Arc::new(Rbuild::new());
    rb.ok(&["pull", "--progress=plain", &busybox().reference]);
    let rounds = trials(2);
    let marker = format!("conc-{}", std::process::id());
    let stop = Arc::new(AtomicBool::new(false));
    let pruner = {
        let rb = rb.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            // The store refuses to collect while another rbuild has it open (its
            // documented rule); a refusal must say so, anything else is a failure.
            let (mut ran, mut refused) = (0, 0);
            while !stop.load(Ordering::SeqCst) {
                let out = rb.run(&["prune"]);
                if out.status.success() {
                    ran += 1;
                } else {
                    let err = String::from_utf8_lossy(&out.stderr);
                    assert!(
                        err.contains("in use by another rbuild process"),
                        "prune failed:\n{}",
                        show(&out)
                    );
                    refused += 1;
                }
            }
            (ran, refused)
        })
    };
    for round in 0..rounds {
        let builders: Vec<_> = (0..4)
            .map(|i| {
                let rb = rb.clone();
                let marker = marker.clone();
                std::thread::spawn(move || {
                    // Shared first step (same cache key in all four), then their own.
                    let ctx = context(
                        &format!("conc-{round}-{i}"),
                        &format!(
                            "ARG BASE\nFROM ${{BASE}}\nRUN echo shared > /shared\n\
                             COPY own /own\n\
                             RUN echo {marker} {round} {i} > /mine; dd if=/dev/zero of=/fill bs=64k count=16 2>/dev/null\n\
                             RUN cat /shared /own /mine > /all\n"
                        ),
                    );
                    ctx.write("own", format!("{round}-{i}\n"));
                    let tag = format!("conc{i}:r{round}");
                    let out = build(&rb, ctx.path(), &tag);
                    assert!(out.status.success(), "build {tag} failed:\n{}", show(&out));
                    tag
                })
            })
            .collect();
        let tags: Vec<String> = builders
            .into_iter()
            .map(|b| b.join().expect("builder thread"))
            .collect();
        // Every tagged image is complete: fsck checks blobs; saving it reads every blob.
        for tag in &tags {
            let out_file = rb
                .root
                .parent()
                .unwrap()
                .join(format!("{}.tar", tag.replace(':', "-")));
            rb.ok(&["save", "-o", &out_file.display().to_string(), tag]);
            let _ = std::fs::remove_file(out_file);
        }
    }
    stop.store(true, Ordering::SeqCst);
    let (ran, refused) = pruner.join().expect("pruner thread");
    eprintln!(
        "{rounds} rounds of 4 builds; prune meanwhile: {ran} ran, {refused} refused (store busy)"
    );
    assert!(ran + refused >= 2, "prune did not overlap the builds");
    // Once the builds are done, prune runs and keeps every tagged image whole.
    rb.ok(&["prune"]);
    for round in 0..rounds {
        for i in 0..4 {
            let tag = format!("conc{i}:r{round}");
            let out_file = rb.root.parent().unwrap().join("after-prune.tar");
            rb.ok(&["save", "-o", &out_file.display().to_string(), &tag]);
            let _ = std::fs::remove_file(out_file);
        }
    }
    assert_store_sound(&rb, &marker, "after concurrent builds and prune");
    // The base is still there: a build after prune needs no pull from the registry.
    let images = rb.ok(&["images"]);
    assert!(
        images.contains("busybox"),
        "prune deleted the base image:\n{images}"
    );
}
