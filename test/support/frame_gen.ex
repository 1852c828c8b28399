defmodule Symbiont.FrameGen do
  @moduledoc false
  # Valid frames a host sends (PROTOCOL.md §3-§8), with random fields, and their
  # mutations, for the fuzz tests of the owner's decoder. Random as Symbiont.MsgPackGen.

  import Bitwise
  import Symbiont.MsgPackGen, only: [gen: 0, gen: 1]

  alias Symbiont.MsgPack
  alias Symbiont.MsgPack.Bin

  @kinds ~w(reply error log call cast msg cancel agent_ready agent_failed ack nack publish
            health ready fatal pong)

  @doc "Every kind a host may send."
  def kinds, do: @kinds

  @doc "A valid frame of `kind` with random fields."
  def valid_frame(kind) do
    case kind do
      "reply" ->
        ["reply", id(), gen()]

      "error" ->
        ["error", id(), error_map()]

      "log" ->
        level = Enum.random(~w(debug info warning error))

        extra =
          for i <- 1..:rand.uniform(4)//1,
              into: %{},
              do: {"f#{i}", Enum.random([nil, true, -3, 2.5, "id", text()])}

        fields = %{"logger" => text(), "level" => "WARNING", "extra" => extra}
        Enum.random([["log", level, text()], ["log", level, text(), fields]])

      "call" ->
        ["call", id(), text(), text(), args()]

      "cast" ->
        ["cast", text(), text(), args()]

      "msg" ->
        ["msg", Enum.random([self(), :some_name, "some_name"]), gen()]

      "cancel" ->
        ["cancel", id()]

      "agent_ready" ->
        ["agent_ready", seq(), agent_info()]

      "agent_failed" ->
        ["agent_failed", seq(), error_map()]

      "ack" ->
        [
          "ack",
          seq(),
          seq(),
          Enum.random([nil, %Bin{data: MsgPack.encode!(gen(), iodata: false)}])
        ]

      "nack" ->
        ["nack", seq(), seq(), error_map()]

      "publish" ->
        payload = %Bin{data: MsgPack.encode!(gen(), iodata: false)}
        # With the seq and n of its id (§8.1), or without them.
        id = Enum.random([[], [id(), n()]])
        ["publish", seq(), text(), payload | id]

      "health" ->
        metrics =
          for i <- 1..:rand.uniform(4)//1,
              into: %{},
              do: {"m#{i}", Enum.random([nil, true, -3, 2.5, "slow", text()])}

        ["health", seq(), Enum.random(~w(healthy degraded overloaded failing)), text(), metrics]

      "ready" ->
        ["ready", 2, ready_info()]

      "fatal" ->
        ["fatal", error_map()]

      "pong" ->
        ["pong", id()]
    end
  end

  @doc """
  A field replaced by a random term, dropped, or one added; or a map value replaced; or
  an integer field (or one of a map) replaced by an integer from the edges of the whole
  msgpack range, in or out of the field's range (PROTOCOL.md §9).
  """
  def mutate_term([kind | fields]) do
    case :rand.uniform(5) do
      5 ->
        [kind | mutate_int(fields)]

      1 when fields != [] ->
        [kind | List.replace_at(fields, :rand.uniform(length(fields)) - 1, gen())]

      2 when fields != [] ->
        [kind | List.delete_at(fields, :rand.uniform(length(fields)) - 1)]

      3 ->
        [kind | fields ++ [gen()]]

      _ ->
        [kind | Enum.map(fields, &mutate_map/1)]
    end
  end

  defp mutate_map(map) when is_map(map) and not is_struct(map) and map_size(map) > 0 do
    key = Enum.random(Map.keys(map))
    if :rand.uniform(2) == 1, do: Map.put(map, key, gen(2)), else: Map.delete(map, key)
  end

  defp mutate_map(other), do: other

  # Integers at the edges of msgpack's range (-2^63..2^64-1) and of the fields' ranges.
  @edges [
    -(1 <<< 63),
    -(1 <<< 63) + 1,
    -1,
    0,
    1,
    63,
    64,
    (1 <<< 32) - 1,
    1 <<< 32,
    (1 <<< 63) - 1,
    1 <<< 63,
    (1 <<< 64) - 1
  ]

  @doc "An integer from anywhere in msgpack's range, often at an edge."
  def any_int do
    if :rand.uniform(2) == 1,
      do: Enum.random(@edges),
      else: :rand.uniform((1 <<< 63) + (1 <<< 64)) - 1 - (1 <<< 63)
  end

  # One integer field, or one integer in a map field, replaced by any_int/0.
  defp mutate_int(fields) do
    case for({x, i} <- Enum.with_index(fields), is_integer(x) or is_map(x), do: i) do
      [] ->
        fields

      places ->
        i = Enum.random(places)
        List.update_at(fields, i, &replace_int/1)
    end
  end

  defp replace_int(x) when is_integer(x), do: any_int()

  defp replace_int(%{} = map) when not is_struct(map) do
    case for({k, v} <- map, is_integer(v), do: k) do
      [] -> Map.new(map, fn {k, v} -> {k, with_timers_int(v)} end)
      keys -> Map.put(map, Enum.random(keys), any_int())
    end
  end

  defp replace_int(other), do: other

  # agent_ready's timers: the every_ms of one.
  defp with_timers_int([%{"every_ms" => _} = timer | rest]),
    do: [%{timer | "every_ms" => any_int()} | rest]

  defp with_timers_int(other), do: other

  # In range (§9), the edges included: ids and seqs up to 2^63-1.
  defp id, do: seq() - 1
  defp seq, do: Enum.random([1, (1 <<< 63) - 1, :rand.uniform((1 <<< bits()) - 1)])
  defp bits, do: Enum.random([4, 16, 40, 63])
  defp n, do: Enum.random([-(1 <<< 63), (1 <<< 63) - 1, -seq(), id()])
  defp text, do: Enum.random(["Elixir.Enum", "sum", "fuzz.topic", "é€", "", "x y"])
  defp args, do: for(_ <- 1..:rand.uniform(3)//1, do: gen(1))

  defp error_map do
    %{"type" => "ValueError", "message" => text(), "traceback" => Enum.random(["", "tb"])}
  end

  defp ready_info do
    %{
      "protocol" => 2,
      "pid" => Enum.random([1, 4242, (1 <<< 63) - 1]),
      "runtime" => "CPython 3.11",
      "max_frame" => Enum.random([64, 1 <<< 26, (1 <<< 32) - 1])
    }
  end

  defp agent_info do
    %{
      "name" => "agent",
      "topics" => Enum.take(["a", "b.c"], :rand.uniform(3) - 1),
      "timers" =>
        Enum.take(
          [%{"name" => "tick", "every_ms" => Enum.random([1, 100, (1 <<< 32) - 1])}],
          :rand.uniform(2) - 1
        )
    }
  end
end
