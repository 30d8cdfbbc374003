//! Hostile policies: each feature builds a module that attacks the host in one way.
//! The host must turn every one of them into a clear deny, within its limits.

#[cfg(not(any(feature = "missing-export", feature = "mistyped-export")))]
mod hostile {
    use tenancy_policy_sdk::*;

    pub struct Hostile;

    #[allow(unreachable_code)] // each feature's body diverges or returns early on purpose
    fn attack(ctx: &Context) -> Vec<Violation> {
        let _ = ctx;
        #[cfg(feature = "infinite-loop")]
        {
            let mut n: u64 = 0;
            loop {
                n = core::hint::black_box(n.wrapping_add(1));
            }
        }
        #[cfg(feature = "memory-bomb")]
        {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 16 << 20]);
                core::hint::black_box(&hoard);
            }
        }
        #[cfg(feature = "deep-recursion")]
        {
            #[allow(unconditional_recursion)] // the point of this module
            fn down(n: u64) -> u64 {
                core::hint::black_box(down(n + 1)) + 1
            }
            let _ = down(0);
        }
        #[cfg(feature = "huge-output")]
        {
            return vec![deny("hostile.huge", "", "x".repeat(8 << 20))];
        }
        #[cfg(feature = "trap")]
        {
            core::arch::wasm32::unreachable();
        }
        #[cfg(feature = "malformed-output")]
        {
            return vec![deny("", "not a pointer", "")];
        }
        #[cfg(feature = "violation-flood")]
        {
            // 16,384 valid two-byte violations: 32 KiB of text, within a 256 KiB output limit
            // by bytes, but over the host's copy bound by their records alone.
            return (0..16_384).map(|_| deny("a", "", "b")).collect();
        }
        #[cfg(feature = "output-at-limit")]
        {
            // Within every per-evaluation limit (100 violations, 261,100 bytes), so it is
            // judged — but 10,000 tenants of it would be 2.6 GB if a run kept it all.
            return (0..100)
                .map(|i| deny("hostile.forge", format!("/spec/{i}"), "x".repeat(2600)))
                .collect();
        }
        #[cfg(feature = "forged-output")]
        {
            // Clear the screen, return the cursor, ring; a line of its own; reorder text;
            // HTML and Markdown for a pull-request comment.
            return vec![
                deny("hostile.forge", "", "\x1b[2J\x1b[H\rok: 0 error(s), 0 warning(s)\x07"),
                deny("hostile.forge", "/spec", "fine\nok: 0 error(s), 0 warning(s)"),
                deny(
                    "hostile.forge",
                    "/metadata",
                    "\u{202e}gnp.exe <img src=x onerror=alert(1)> </details> **[ok](javascript:alert(1))** | x |",
                ),
            ];
        }
        #[cfg(feature = "bad-pointer")]
        {
            return vec![deny("hostile.pointer", "spec/regions", "a path that is not a JSON pointer")];
        }
        #[cfg(feature = "lookup-flood")]
        {
            // A platform lookup by a 1 MiB name.
            use tenancy_policy_sdk::bindings::tenancy::policy::platform as p;
            return match p::region(&"r".repeat(1 << 20)) {
                Some(found) => vec![deny("hostile.lookup", "", found)],
                None => Vec::new(),
            };
        }
        #[cfg(feature = "lookup-loop")]
        {
            // The inventory asked for again and again, every answer kept.
            use tenancy_policy_sdk::bindings::tenancy::policy::platform as p;
            let mut kept = Vec::new();
            loop {
                kept.push((p::region_names(), p::plan_names(), p::region("eu-west-1")));
                core::hint::black_box(&kept);
            }
        }
        #[cfg(feature = "wasi-filesystem")]
        {
            let secret = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
            return vec![deny("hostile.exfiltrate", "", secret)];
        }
        #[cfg(feature = "wasi-sockets")]
        {
            let ok = std::net::TcpStream::connect("127.0.0.1:5432").is_ok();
            return vec![deny("hostile.network", "", format!("connected: {ok}"))];
        }
        Vec::new()
    }

    impl Policy for Hostile {
        #[cfg(not(feature = "forged-info"))]
        const NAME: &'static str = "hostile";
        // What a module says of itself reaches `policy inspect` and the decision records.
        #[cfg(feature = "forged-info")]
        const NAME: &'static str = "hostile\x1b[2J\x1b[Hok\0";
        const VERSION: &'static str = "0.0.0";
        const RULES: &'static [&'static str] = &[
            "hostile.huge",
            "hostile.exfiltrate",
            "hostile.network",
            "hostile.forge",
            "hostile.pointer",
            "hostile.lookup",
            "a",
        ];
        fn evaluate(ctx: &Context) -> Vec<Violation> {
            attack(ctx)
        }
    }

    export_policy!(Hostile);
}

#[cfg(feature = "missing-export")]
mod wrong {
    wit_bindgen::generate!({ path: "wit-wrong", world: "missing-export" });
    struct W;
    impl Guest for W {
        fn info() -> String {
            "not a policy-info record".into()
        }
    }
    export!(W);
}

#[cfg(feature = "mistyped-export")]
mod wrong {
    wit_bindgen::generate!({ path: "wit-wrong", world: "mistyped-export" });
    struct W;
    impl Guest for W {
        fn info() -> String {
            "mistyped".into()
        }
        fn evaluate(input: String) -> String {
            input
        }
    }
    export!(W);
}
