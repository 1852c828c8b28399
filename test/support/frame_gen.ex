defmodule Symbiont.FrameGen do
  @moduledoc false
  # Valid frames a host sends (PROTOCOL.md §3-§8), with random fields, and their
  # mutations, for the fuzz tests of the owner's decoder. Random as Symbiont.MsgPackGen.

  import Bitwise
  import Symbiont.MsgPackGen, only: [gen: 0, gen: 1]

  alias Symbiont.MsgPack
  alias Symbiont.MsgPack.Bin

  @kinds ~w(reply error log call cast msg cancel agent_ready agent_failed ack nack publish
            ready fatal)

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
        ["log", Enum.random(~w(debug info warning error)), text()]

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
        id = Enum.random([[], [id(), Enum.random([id(), -seq()])]])
        ["publish", seq(), text(), payload | id]

      "ready" ->
        ["ready", 2, ready_info()]

      "fatal" ->
        ["fatal", error_map()]
    end
  end

  @doc "A field replaced by a random term, dropped, or one added; or a map value replaced."
  def mutate_term([kind | fields]) do
    case :rand.uniform(4) do
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

  defp id, do: :rand.uniform(1 <<< Enum.random([4, 16, 40])) - 1
  defp seq, do: :rand.uniform(1 <<< Enum.random([4, 16, 40]))
  defp text, do: Enum.random(["Elixir.Enum", "sum", "fuzz.topic", "é€", "", "x y"])
  defp args, do: for(_ <- 1..:rand.uniform(3)//1, do: gen(1))

  defp error_map do
    %{"type" => "ValueError", "message" => text(), "traceback" => Enum.random(["", "tb"])}
  end

  defp ready_info do
    %{"protocol" => 2, "pid" => 4242, "runtime" => "CPython 3.11", "max_frame" => 1 <<< 26}
  end

  defp agent_info do
    %{
      "name" => "agent",
      "topics" => Enum.take(["a", "b.c"], :rand.uniform(3) - 1),
      "timers" => Enum.take([%{"name" => "tick", "every_ms" => 100}], :rand.uniform(2) - 1)
    }
  end
end
