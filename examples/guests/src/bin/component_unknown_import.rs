//! A component (`wasm32-wasip2`) that imports an interface no host
//! provides, `acme:missing/thing`: `shmgate run` must refuse it with a
//! clear error before running anything.

mod bindings {
    wit_bindgen::generate!({
        inline: "
            package acme:missing;
            interface thing { poke: func() -> u32; }
            world needs-thing { import thing; }
        ",
    });
}

fn main() {
    println!("unknown-import: poke = {}", bindings::acme::missing::thing::poke());
}
