;; A component of the symbiont:agent world (wit/agent.wit), written by hand: the
;; Component Model's text format, which wasmtime reads (`wasm:` takes the .wat as is).
;; It counts the events it handles and publishes the count on count.out (a msgpack
;; uint32); its state is that count (the same msgpack), so a new instance resumes it.
;; An event whose payload is msgpack nil makes it return a state that is not msgpack
;; (0xc1, never used), for the host's checks.
(component
  (import "symbiont:agent/host@0.1.0" (instance $host
    (export "publish" (func (param "topic" string) (param "payload" (list u8))))
    (export "log" (func (param "level" u8) (param "message" string)))
  ))

  ;; Memory and a bump allocator (what canon lift/lower need), in a module of their own
  ;; so that the host's functions can be lowered into the memory before $main exists.
  (core module $libc
    (memory (export "memory") 1)
    (global $heap (mut i32) (i32.const 4096))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      ;; align up: (heap + align - 1) & -align
      (local.set $p
        (i32.and
          (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
          (i32.sub (i32.const 0) (local.get 2))))
      (global.set $heap (i32.add (local.get $p) (local.get 3)))
      ;; a call's arguments are dropped after it: start again past the fixed data
      (if (i32.gt_u (global.get $heap) (i32.const 60000))
        (then (global.set $heap (i32.const 4096))
              (local.set $p (i32.const 4096))
              (global.set $heap (i32.add (local.get $p) (local.get 3)))))
      (local.get $p)))
  (core instance $libc (instantiate $libc))
  (alias core export $libc "memory" (core memory $memory))
  (alias core export $libc "realloc" (core func $realloc))
  (core func $publish (canon lower (func $host "publish") (memory $memory)))
  (core func $log (canon lower (func $host "log") (memory $memory)))

  (core module $main
    (import "libc" "memory" (memory 1))
    (import "host" "publish" (func $publish (param i32 i32 i32 i32)))
    (import "host" "log" (func $log (param i32 i32 i32)))
    ;; 0: the count; 16: the return area (discriminant, ptr, len); 32: the state and
    ;; the published count (0xce + big-endian u32); 48: "count.out"; 64: a log line;
    ;; 80: an empty list.
    (data (i32.const 48) "count.out")
    (data (i32.const 64) "counted")
    (global $n (mut i32) (i32.const 0))
    (func $encode (result i32)
      (i32.store8 (i32.const 32) (i32.const 0xce))
      (i32.store8 (i32.const 33) (i32.shr_u (global.get $n) (i32.const 24)))
      (i32.store8 (i32.const 34) (i32.shr_u (global.get $n) (i32.const 16)))
      (i32.store8 (i32.const 35) (i32.shr_u (global.get $n) (i32.const 8)))
      (i32.store8 (i32.const 36) (global.get $n))
      (i32.const 32))
    ;; A msgpack unsigned integer of up to 32 bits at ptr (len bytes), else 0.
    (func $uint (param $p i32) (param $len i32) (result i32)
      (local $tag i32)
      (if (i32.eqz (local.get $len)) (then (return (i32.const 0))))
      (local.set $tag (i32.load8_u (local.get $p)))
      (if (i32.lt_u (local.get $tag) (i32.const 0x80)) (then (return (local.get $tag))))
      (if (i32.and (i32.eq (local.get $tag) (i32.const 0xcc)) (i32.eq (local.get $len) (i32.const 2)))
        (then (return (i32.load8_u offset=1 (local.get $p)))))
      (if (i32.and (i32.eq (local.get $tag) (i32.const 0xcd)) (i32.eq (local.get $len) (i32.const 3)))
        (then (return
          (i32.or (i32.shl (i32.load8_u offset=1 (local.get $p)) (i32.const 8))
                  (i32.load8_u offset=2 (local.get $p))))))
      (if (i32.and (i32.eq (local.get $tag) (i32.const 0xce)) (i32.eq (local.get $len) (i32.const 5)))
        (then (return
          (i32.or
            (i32.or (i32.shl (i32.load8_u offset=1 (local.get $p)) (i32.const 24))
                    (i32.shl (i32.load8_u offset=2 (local.get $p)) (i32.const 16)))
            (i32.or (i32.shl (i32.load8_u offset=3 (local.get $p)) (i32.const 8))
                    (i32.load8_u offset=4 (local.get $p)))))))
      (i32.const 0))
    (func $ok_state (result i32)
      (call $encode) (drop)
      (i32.store8 (i32.const 16) (i32.const 0))
      (i32.store (i32.const 20) (i32.const 32))
      (i32.store (i32.const 24) (i32.const 5))
      (i32.const 16))
    ;; init(name, config, state: option<list<u8>>) -> result<_, string>
    (func (export "init") (param i32 i32 i32 i32 i32 i32 i32) (result i32)
      (global.set $n (i32.const 0))
      ;; The state as the host checkpoints it: msgpack re-encoded by the host, so the
      ;; shortest form: a positive fixint, or uint 8, 16 or 32 (0xcc, 0xcd, 0xce).
      (if (i32.eq (local.get 4) (i32.const 1))
        (then (global.set $n (call $uint (local.get 5) (local.get 6)))))
      (i32.store8 (i32.const 16) (i32.const 0))
      (i32.const 16))
    ;; subscriptions() -> list<string>, timers() -> list<tuple<string, u32>>: none
    (func (export "none") (result i32)
      (i32.store (i32.const 80) (i32.const 0))
      (i32.store (i32.const 84) (i32.const 0))
      (i32.const 80))
    ;; handle(topic, payload) -> result<list<u8>, string>
    (func (export "handle") (param i32 i32 i32 i32) (result i32)
      (if (i32.eq (i32.load8_u (local.get 2)) (i32.const 0xc0))
        (then
          (i32.store8 (i32.const 32) (i32.const 0xc1))
          (i32.store8 (i32.const 16) (i32.const 0))
          (i32.store (i32.const 20) (i32.const 32))
          (i32.store (i32.const 24) (i32.const 1))
          (return (i32.const 16))))
      (global.set $n (i32.add (global.get $n) (i32.const 1)))
      (call $publish (i32.const 48) (i32.const 9) (call $encode) (i32.const 5))
      (call $log (i32.const 1) (i32.const 64) (i32.const 7))
      (call $ok_state))
    ;; tick(name) -> result<list<u8>, string>; snapshot() -> result<list<u8>, string>
    (func (export "tick") (param i32 i32) (result i32) (call $ok_state))
    (func (export "snapshot") (result i32) (call $ok_state)))
  (core instance $main (instantiate $main
    (with "libc" (instance $libc))
    (with "host" (instance (export "publish" (func $publish)) (export "log" (func $log))))))

  (func (export "init")
    (param "name" string) (param "config" (list u8)) (param "state" (option (list u8)))
    (result (result (error string)))
    (canon lift (core func $main "init") (memory $memory) (realloc $realloc)))
  (func (export "subscriptions") (result (list string))
    (canon lift (core func $main "none") (memory $memory) (realloc $realloc)))
  (func (export "timers") (result (list (tuple string u32)))
    (canon lift (core func $main "none") (memory $memory) (realloc $realloc)))
  (func (export "handle") (param "topic" string) (param "payload" (list u8))
    (result (result (list u8) (error string)))
    (canon lift (core func $main "handle") (memory $memory) (realloc $realloc)))
  (func (export "tick") (param "name" string) (result (result (list u8) (error string)))
    (canon lift (core func $main "tick") (memory $memory) (realloc $realloc)))
  (func (export "snapshot") (result (result (list u8) (error string)))
    (canon lift (core func $main "snapshot") (memory $memory) (realloc $realloc)))
)
