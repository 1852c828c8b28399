;; A module that publishes on many topics (ABI v1, docs/WASM_ABI.md), for the tests of an
;; agent's :max_topics: each message's payload is a count n (a msgpack positive fixint,
;; uint8 or uint16), and the module publishes nil on "spray.0000", "spray.0001", ... up
;; to n - 1 (four hex digits), in that order. A publish the runtime refuses fails the
;; call (WASM_ABI.md §2).
(module
  (import "symbiont" "publish" (func $publish (param i32 i32 i32 i32)))
  (memory (export "memory") 1)
  ;; The topic lives at 16 (its four digits at 22), the payload (nil) at 512, the input
  ;; at 1024.
  (data (i32.const 16) "spray.0000")
  (data (i32.const 512) "\c0")

  (func (export "symbiont_abi_version") (result i32) (i32.const 1))

  (func (export "symbiont_alloc") (param $size i32) (result i32)
    (if (i32.gt_u (local.get $size) (i32.const 60000)) (then (return (i32.const 0))))
    (i32.const 1024))

  ;; The header size of the msgpack str at $p (fixstr, str8 or str16); traps on another type.
  (func $str_header (param $p i32) (result i32)
    (local $b i32)
    (local.set $b (i32.load8_u (local.get $p)))
    (if (i32.eq (i32.and (local.get $b) (i32.const 0xe0)) (i32.const 0xa0))
      (then (return (i32.const 1))))
    (if (i32.eq (local.get $b) (i32.const 0xd9)) (then (return (i32.const 2))))
    (if (i32.eq (local.get $b) (i32.const 0xda)) (then (return (i32.const 3))))
    (unreachable))

  ;; The length in bytes of the msgpack str at $p.
  (func $str_len (param $p i32) (result i32)
    (local $b i32)
    (local.set $b (i32.load8_u (local.get $p)))
    (if (i32.eq (i32.and (local.get $b) (i32.const 0xe0)) (i32.const 0xa0))
      (then (return (i32.and (local.get $b) (i32.const 0x1f)))))
    (if (i32.eq (local.get $b) (i32.const 0xd9))
      (then (return (i32.load8_u offset=1 (local.get $p)))))
    (i32.or (i32.shl (i32.load8_u offset=1 (local.get $p)) (i32.const 8))
            (i32.load8_u offset=2 (local.get $p))))

  ;; The msgpack positive fixint, uint8 or uint16 at $p; traps on anything else.
  (func $count (param $p i32) (result i32)
    (local $b i32)
    (local.set $b (i32.load8_u (local.get $p)))
    (if (i32.lt_u (local.get $b) (i32.const 128)) (then (return (local.get $b))))
    (if (i32.eq (local.get $b) (i32.const 0xcc))
      (then (return (i32.load8_u offset=1 (local.get $p)))))
    (if (i32.ne (local.get $b) (i32.const 0xcd)) (then (unreachable)))
    (i32.or (i32.shl (i32.load8_u offset=1 (local.get $p)) (i32.const 8))
            (i32.load8_u offset=2 (local.get $p))))

  ;; The hex digit of the low four bits of $d.
  (func $hex (param $d i32) (result i32)
    (local.set $d (i32.and (local.get $d) (i32.const 15)))
    (if (result i32) (i32.lt_u (local.get $d) (i32.const 10))
      (then (i32.add (local.get $d) (i32.const 48)))
      (else (i32.add (local.get $d) (i32.const 87)))))

  ;; The input is the msgpack array [topic, payload] (WASM_ABI.md §3): the count follows
  ;; the topic's header and bytes.
  (func (export "symbiont_handle") (param $ptr i32) (param $len i32) (result i64)
    (local $topic i32) (local $n i32) (local $i i32)
    (if (i32.ne (i32.load8_u (local.get $ptr)) (i32.const 0x92)) (then (unreachable)))
    (local.set $topic (i32.add (local.get $ptr) (i32.const 1)))
    (local.set $n
      (call $count
        (i32.add (local.get $topic)
          (i32.add (call $str_header (local.get $topic)) (call $str_len (local.get $topic))))))
    (local.set $i (i32.const 0))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (i32.store8 (i32.const 22) (call $hex (i32.shr_u (local.get $i) (i32.const 12))))
        (i32.store8 (i32.const 23) (call $hex (i32.shr_u (local.get $i) (i32.const 8))))
        (i32.store8 (i32.const 24) (call $hex (i32.shr_u (local.get $i) (i32.const 4))))
        (i32.store8 (i32.const 25) (call $hex (local.get $i)))
        (call $publish (i32.const 16) (i32.const 10) (i32.const 512) (i32.const 1))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i64.or (i64.const 2199023255552) (i64.const 1)))  ;; (512 << 32) | 1: nil
)
