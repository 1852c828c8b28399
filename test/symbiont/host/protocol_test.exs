defmodule Symbiont.Host.ProtocolTest do
  # The owner's frame decoder fuzzed: bytes from a host become a validated frame or a
  # protocol error (PROTOCOL.md §9), never a raise. Seeded: SYMBIONT_FUZZ_SEED=N replays
  # or explores; a failure prints the seed, the case and its bytes.
  use ExUnit.Case, async: true
  import Bitwise

  import Symbiont.MsgPackGen, only: [mutate: 1, random_bytes: 1]
  import Symbiont.FrameGen, only: [valid_frame: 1, mutate_term: 1]

  alias Symbiont.Host.{Framer, Protocol}
  alias Symbiont.MsgPack

  @cases 10_000
  @kinds Symbiont.FrameGen.kinds()

  test "#{@cases} random payloads: a validated frame or a protocol error" do
    seed = Symbiont.MsgPackGen.seed!(5_001)

    for n <- 1..@cases do
      # Half plain noise; half led by a fixarray header and a kind, so that the
      # validation behind the msgpack decoder is reached too.
      bytes =
        if rem(n, 2) == 0,
          do: random_bytes(:rand.uniform(48) - 1),
          else: random_led_by_kind()

      check!(bytes, seed, n)
    end
  end

  test "#{@cases} mutated valid frames of every kind: a validated frame or a protocol error" do
    seed = Symbiont.MsgPackGen.seed!(5_002)

    for n <- 1..@cases do
      frame = valid_frame(Enum.at(@kinds, rem(n, length(@kinds))))
      encoded = MsgPack.encode!(frame, iodata: false)
      assert {:ok, _} = Protocol.decode(encoded), "a valid frame was refused: #{inspect(frame)}"

      bytes =
        case :rand.uniform(3) do
          1 -> mutate(encoded)
          2 -> Enum.reduce(1..:rand.uniform(4), encoded, fn _, b -> mutate(b) end)
          3 -> frame |> mutate_term() |> MsgPack.encode!(iodata: false)
        end

      check!(bytes, seed, n)
    end
  end

  test "the framer splits any chunking of a stream the same way, and refuses oversize at once" do
    seed = Symbiont.MsgPackGen.seed!(5_003)

    for n <- 1..500 do
      payloads = for _ <- 1..:rand.uniform(6), do: random_bytes(:rand.uniform(300) - 1)
      stream = IO.iodata_to_binary(Enum.map(payloads, &Framer.frame/1))

      assert feed_in_chunks(Framer.new(1024), stream) == {:ok, payloads},
             "seed #{seed}, case #{n}: #{inspect(stream, limit: 64)}"
    end

    # A length prefix over the limit is refused as soon as its four bytes are in.
    assert {:ok, [], framer} = Framer.feed(Framer.new(1024), <<0, 0>>)
    assert Framer.feed(framer, <<4, 1>>) == {:error, {:oversize, 1025, 1024}}
    assert Protocol.format_error({:oversize, 1025, 1024}) =~ "exceeds the limit of 1024"
  end

  test "random bytes through the framer: payloads or an oversize error, never a raise" do
    seed = Symbiont.MsgPackGen.seed!(5_004)

    for n <- 1..2_000 do
      bytes = random_bytes(:rand.uniform(64))

      result =
        try do
          feed_in_chunks(Framer.new(Enum.random([16, 1024, 1 <<< 20])), bytes)
        rescue
          e -> flunk("seed #{seed}, case #{n}: #{inspect(bytes)} raised #{inspect(e)}")
        end

      assert match?({:ok, _}, result) or match?({:error, {:oversize, _, _}}, result)
    end
  end

  test "frames the owner reads fields of are checked deeply, with a clear reason" do
    error = %{"type" => "ValueError", "message" => "no", "traceback" => ""}

    for {frame, text} <- [
          {["error", 1, %{"type" => %{}}], ~s(an error must be a map with "type")},
          {["nack", 1, 1, %{"type" => "E", "message" => 1, "traceback" => ""}], "§5"},
          {["fatal", "boom"], ~s(bad "fatal" frame)},
          {["agent_ready", 1, %{"name" => "a", "topics" => [1], "timers" => []}],
           ~s("topics" must be non-empty strings, got: [1])},
          {["agent_ready", 1, %{"name" => "a", "topics" => [], "timers" => [%{"name" => 1}]}],
           ~s("timers" must be maps)},
          {["ready", 2, %{"max_frame" => "big"}], ~s|"max_frame" (int in 64..2^32-1)|},
          {["log", "loud", "x"], ~s(level "loud" is not one of debug, info, warning, error)},
          {["log", "info", "x", [1]], "fields must be a map (§7)"},
          {["log", "info", "x", %{"logger" => String.duplicate("z", 257)}],
           ~s("logger" must be a string of at most 256 bytes)},
          {["log", "info", "x", %{"level" => 40}], ~s("level" must be a string)},
          {["log", "info", "x", %{"extra" => Map.new(1..17, &{"f#{&1}", &1})}],
           ~s("extra" must be a map of at most 16 fields)},
          {["log", "info", "x", %{"extra" => %{"f" => [1]}}], ~s("extra" must be a map)},
          {["log", "info", "x", %{"extra" => %{"f" => String.duplicate("z", 257)}}],
           "or a string of at most 256 bytes"},
          {["log", "info", "x", %{"extra" => %{String.duplicate("k", 65) => 1}}],
           "named by strings of at most 64 bytes"},
          {["health", 1, "quarantined", "", %{}],
           ~s|bad "health" frame: kind "quarantined" is not one of healthy, degraded, overloaded, failing (§8.3)|},
          {["health", 1, "failing", String.duplicate("z", 1025), %{}],
           "reason must be a string of at most 1024 bytes"},
          {["health", 1, "failing", "", Map.new(1..17, &{"m#{&1}", &1})],
           "metrics must be a map of at most 16 entries"},
          {["health", 1, "failing", "", %{"m" => [1]}],
           ~s(metric "m" = [1] is not allowed: names are strings of at most 64 bytes, values nil)},
          {["health", 1, "failing", "", %{"m" => String.duplicate("z", 257)}],
           ~s(metric "m" = "zzz)}
        ] do
      assert {:error, reason} = Protocol.decode(MsgPack.encode!(frame, iodata: false))
      assert Protocol.format_error(reason) =~ text
    end

    assert {:ok, {:nack, 1, 2, ^error}} =
             Protocol.decode(MsgPack.encode!(["nack", 1, 2, error], iodata: false))
  end

  test "every integer a host sends is bounded (§9): the edges pass, one past is refused with the field, the value and the range" do
    top = (1 <<< 63) - 1
    error = %{"type" => "E", "message" => "m", "traceback" => ""}
    info = %{"protocol" => 2, "pid" => 1, "runtime" => "C", "max_frame" => 64}
    agent = %{"name" => "a", "topics" => [], "timers" => []}

    # {frame with the field at `x`, the field's name, its range}
    fields = [
      {&["reply", &1, nil], "id", 0..top},
      {&["error", &1, error], "id", 0..top},
      {&["call", &1, "m", "f", []], "id", 0..top},
      {&["cancel", &1], "id", 0..top},
      {&["pong", &1], "n", 0..top},
      {&["agent_ready", &1, agent], "slot", 1..top},
      {&["agent_failed", &1, error], "slot", 1..top},
      {&["ack", &1, 1, nil], "slot", 1..top},
      {&["ack", 1, &1, nil], "seq", 1..top},
      {&["nack", &1, 1, error], "slot", 1..top},
      {&["nack", 1, &1, error], "seq", 1..top},
      {&["publish", &1, "t", <<0xC0>>], "slot", 1..top},
      {&["publish", &1, "t", <<0xC0>>, 1, 0], "slot", 1..top},
      {&["publish", 1, "t", <<0xC0>>, &1, 0], "seq", 0..top},
      {&["publish", 1, "t", <<0xC0>>, 0, &1], "n", -(1 <<< 63)..top},
      {&["health", &1, "healthy", "", %{}], "slot", 1..top},
      {&["ready", &1, info], "version", 0..top}
    ]

    for {frame, name, min..max} <- fields do
      for x <- [min, max] do
        assert {:ok, _} = decode(frame.(x)), "#{inspect(frame.(x))} was refused"
      end

      # msgpack holds -2^63..2^64-1: n's own edges are msgpack's.
      for x <- [min - 1, max + 1, -(1 <<< 63), (1 <<< 64) - 1],
          x not in min..max and x >= -(1 <<< 63) do
        assert {:error, {:bad_frame, _, text} = reason} = decode(frame.(x))

        assert text =~ "#{name} #{x} is out of range: expected an integer in ",
               "#{inspect(frame.(x))}: #{text}"

        assert Protocol.format_error(reason) =~ "(§9)"
      end
    end

    # In the maps the owner reads: ready's info, agent_ready's timers.
    for {key, bad} <- [{"protocol", -1}, {"pid", 0}, {"pid", 1 <<< 63}, {"max_frame", 1 <<< 32}] do
      assert {:error, {:bad_frame, "ready", text}} = decode(["ready", 2, Map.put(info, key, bad)])

      assert text =~ ~s|"max_frame" (int in 64..2^32-1)|
    end

    assert {:ok, _} = decode(["ready", 2, %{info | "max_frame" => (1 <<< 32) - 1}])

    for ms <- [0, 1 <<< 32, 1 <<< 63] do
      timers = [%{"name" => "t", "every_ms" => ms}]

      assert {:error, {:bad_frame, "agent_ready", text}} =
               decode(["agent_ready", 1, %{agent | "timers" => timers}])

      assert text =~ ~s|"every_ms" (int in 1..2^32-1)|
    end

    timers = [%{"name" => "t", "every_ms" => (1 <<< 32) - 1}]
    assert {:ok, _} = decode(["agent_ready", 1, %{agent | "timers" => timers}])
  end

  defp decode(frame), do: Protocol.decode(MsgPack.encode!(frame, iodata: false))

  ## The oracle: what decode may return (PROTOCOL.md §3-§9)

  defp check!(bytes, seed, n) do
    result =
      try do
        Protocol.decode(bytes)
      rescue
        e -> fail(seed, n, bytes, "raised #{Exception.format(:error, e, __STACKTRACE__)}")
      end

    case result do
      {:ok, frame} ->
        conforms?(frame) ||
          fail(seed, n, bytes, "accepted a frame outside the spec: #{inspect(frame)}")

      {:error, reason} ->
        documented?(reason) || fail(seed, n, bytes, "undocumented reason #{inspect(reason)}")

        message =
          try do
            Protocol.format_error(reason)
          rescue
            e -> fail(seed, n, bytes, "format_error(#{inspect(reason)}) raised #{inspect(e)}")
          end

        (is_binary(message) && String.printable?(message)) ||
          fail(seed, n, bytes, "unprintable reason #{inspect(message)}")

      other ->
        fail(seed, n, bytes, "returned #{inspect(other)}")
    end
  end

  defp fail(seed, n, bytes, what) do
    flunk("""
    frame fuzz, seed #{seed} (SYMBIONT_FUZZ_SEED=#{seed} to replay), case #{n}: #{what}
    input: #{inspect(bytes, limit: :infinity)}
    """)
  end

  defp documented?({:undecodable, _}), do: true
  defp documented?({:not_a_frame, text}), do: is_binary(text)
  defp documented?({:unknown_kind, kind}), do: is_binary(kind) and kind not in @kinds
  defp documented?({:bad_frame, kind, text}), do: kind in @kinds and is_binary(text)
  defp documented?(_), do: false

  # §9: ids and seqs 0..2^63-1 (slots and seqs from 1), n of a publish -2^63..2^63-1.
  @max_int (1 <<< 63) - 1
  defguardp id?(x) when is_integer(x) and x >= 0 and x <= @max_int
  defguardp seq?(x) when is_integer(x) and x > 0 and x <= @max_int
  defguardp n?(x) when is_integer(x) and x >= -(1 <<< 63) and x <= @max_int

  defp conforms?({:reply, id, _}) when id?(id), do: true
  defp conforms?({:error, id, e}) when id?(id), do: error?(e)
  defp conforms?({:log, l, m}) when l in [:debug, :info, :warning, :error], do: is_binary(m)

  # §7: a record's fields, within their bounds.
  defp conforms?({:log, l, m, f}) when l in [:debug, :info, :warning, :error] do
    extra = Map.get(f, "extra", %{})

    is_binary(m) and byte_size(Map.get(f, "logger", "")) <= 256 and
      byte_size(Map.get(f, "level", "")) <= 32 and map_size(extra) <= 16 and
      Enum.all?(extra, fn {name, v} ->
        is_binary(name) and byte_size(name) <= 64 and
          (is_nil(v) or is_boolean(v) or is_number(v) or (is_binary(v) and byte_size(v) <= 256))
      end)
  end

  defp conforms?({:call, id, m, f, a}) when id?(id),
    do: is_binary(m) and is_binary(f) and is_list(a)

  defp conforms?({:cast, m, f, a}), do: is_binary(m) and is_binary(f) and is_list(a)
  defp conforms?({:msg, _dest, _value}), do: true
  defp conforms?({:cancel, id}), do: id?(id)
  defp conforms?({:agent_failed, s, e}) when seq?(s), do: error?(e)
  defp conforms?({:ack, s, q, b}) when seq?(s) and seq?(q), do: is_binary(b) or is_nil(b)
  defp conforms?({:nack, s, q, e}) when seq?(s) and seq?(q), do: error?(e)
  defp conforms?({:publish, s, t, p, nil}) when seq?(s), do: is_binary(t) and is_binary(p)

  defp conforms?({:publish, s, t, p, {q, n}}) when seq?(s) and id?(q) and n?(n),
    do: is_binary(t) and is_binary(p)

  # §8.3: a report's kind, reason and metrics, within their bounds.
  defp conforms?({:health, s, k, r, m}) when seq?(s) do
    k in ~w(healthy degraded overloaded failing) and is_binary(r) and byte_size(r) <= 1024 and
      is_map(m) and map_size(m) <= 16 and
      Enum.all?(m, fn {name, v} ->
        is_binary(name) and byte_size(name) <= 64 and
          (is_nil(v) or is_boolean(v) or is_number(v) or (is_binary(v) and byte_size(v) <= 256))
      end)
  end

  defp conforms?({:fatal, e}), do: error?(e)
  defp conforms?({:pong, n}), do: id?(n)

  defp conforms?({:ready, v, %{"protocol" => p, "pid" => pid, "runtime" => r, "max_frame" => m}})
       when id?(v),
       do: id?(p) and seq?(pid) and is_binary(r) and is_integer(m) and m in 64..((1 <<< 32) - 1)

  defp conforms?({:agent_ready, s, %{"name" => n, "topics" => ts, "timers" => tms}})
       when seq?(s) and is_binary(n) and is_list(ts) and is_list(tms) do
    Enum.all?(ts, &(is_binary(&1) and &1 != "")) and
      Enum.all?(tms, fn
        %{"name" => name, "every_ms" => ms} ->
          is_binary(name) and is_integer(ms) and ms in 1..((1 <<< 32) - 1)

        _ ->
          false
      end)
  end

  defp conforms?(_), do: false

  defp error?(%{"type" => t, "message" => m, "traceback" => tb}),
    do: is_binary(t) and is_binary(m) and is_binary(tb)

  defp error?(_), do: false

  ## Generators

  defp random_led_by_kind do
    kind = Enum.random(@kinds ++ ["bogus", ""])
    arity = :rand.uniform(5)
    <<0x90 + arity, 0xA0 + byte_size(kind), kind::binary>> <> random_bytes(:rand.uniform(40) - 1)
  end

  defp feed_in_chunks(framer, stream), do: feed_in_chunks(framer, stream, [])

  defp feed_in_chunks(_framer, <<>>, acc), do: {:ok, acc |> Enum.reverse() |> List.flatten()}

  defp feed_in_chunks(framer, stream, acc) do
    size = min(byte_size(stream), :rand.uniform(40))
    <<chunk::binary-size(size), rest::binary>> = stream

    case Framer.feed(framer, chunk) do
      {:ok, payloads, framer} -> feed_in_chunks(framer, rest, [payloads | acc])
      {:error, _} = error -> error
    end
  end
end
