defmodule Symbiont.ControlPlane do
  @moduledoc """
  The control plane: the topics that start with `symbiont.` (`symbiont.health`,
  `symbiont.remediation`, `symbiont.dead_letter`, and any other) belong to the BEAM.
  What is said there about an agent is said, and stamped, by Symbiont itself.

  ## Who publishes there

  Only the BEAM's own publishers: `Symbiont.Health.publish/5` (an agent's owner, the
  mesh, a deploy; and an agent's own report, which reaches its owner in a `health` frame,
  PROTOCOL.md §8.3, and goes out stamped with the agent that sent it, never with a name
  of its own choosing), `Symbiont.Remediation.publish/4`, and an agent's server, for its
  dead letters. An agent cannot:

    * a Python agent's `self.publish` on such a topic raises `symbiont.ReservedTopicError`,
      and a Wasm module's `publish` import fails its call with an `abi` error;
    * the owner checks again, for a host that goes around its own check: it drops the
      publish, counts it (`refused_publishes` of `Symbiont.Agent.Server.info/1`) and logs
      it once per start of the agent (PROTOCOL.md §8);
    * `Symbiont.publish/3` refuses them too, with `{:error, message}`.

  Not covered: code that runs as the node. Elixir code (the operator's included) and
  Python code calling into the node through `symbiont.erlang.call`, `cast` or `send`
  (trusted code, which can call any function and send to any process,
  docs/SECURITY.md §4) can still call `Symbiont.Mesh.publish/3` or the publishers above.
  What no code can do is write the audit trail through the topic: it holds only what
  `Symbiont.Remediation` recorded, timed by the BEAM's clock (`Symbiont.Conductor.Audit`).

  ## Sizes

  Events on these topics are decoded by subscribers inside the node (the health history,
  the status page's feed, the conductor), which keep them. They decode them only through
  `decode/1`: at most #{65_536} bytes and #{4_096} msgpack values, checked before anything
  is built; an event over either is dropped (each subscriber logs the first). The BEAM's
  publishers keep within: reasons are cut (`text/2`) and maps bounded (`bound/3`).
  Dead letters are the exception: they carry the event given up on, whole (as a bin), and
  no subscriber inside the node decodes them.
  """

  require Logger

  @prefix Symbiont.Contract.reserved_topic_prefix()
  @max_bytes 65_536
  @max_values 4_096

  @doc "The prefix of the BEAM's own topics."
  @spec prefix() :: String.t()
  def prefix, do: @prefix

  @doc """
  Whether `topic` is one of the BEAM's own (only Symbiont publishes there).

      iex> Symbiont.ControlPlane.reserved?("symbiont.health")
      true
      iex> Symbiont.ControlPlane.reserved?("orders.symbiont.x")
      false
  """
  @spec reserved?(String.t()) :: boolean
  def reserved?(topic) when is_binary(topic), do: String.starts_with?(topic, @prefix)

  @doc """
  Why a publish on `topic` (a reserved one) is refused, in the words every side uses.

      iex> Symbiont.ControlPlane.refusal("symbiont.health")
      ~s|topic "symbiont.health" is reserved: topics starting with "symbiont." are published by Symbiont itself, not by agents (report health with self.health or the Wasm health import)|
  """
  @spec refusal(String.t()) :: String.t()
  def refusal(topic) do
    "topic #{inspect(topic, printable_limit: 100)} is reserved: topics starting with " <>
      "\"#{@prefix}\" are published by Symbiont itself, not by agents " <>
      "(report health with self.health or the Wasm health import)"
  end

  @doc "The most bytes an event on a reserved topic may have to be decoded inside the node."
  @spec max_bytes() :: pos_integer
  def max_bytes, do: @max_bytes

  @doc "The most msgpack values an event on a reserved topic may hold to be decoded."
  @spec max_values() :: pos_integer
  def max_values, do: @max_values

  @doc """
  Decodes the payload of an event on a reserved topic within `max_bytes/0` and
  `max_values/0`, checked before anything is built (`Symbiont.MsgPack.decode/2`). The
  first refusal in the calling process is logged, as a warning.
  """
  @spec decode(Symbiont.Event.t()) :: {:ok, term} | {:error, Symbiont.MsgPack.decode_error()}
  def decode(%Symbiont.Event{topic: topic, payload: payload, from: from}) do
    case Symbiont.MsgPack.decode(payload, max_bytes: @max_bytes, max_values: @max_values) do
      {:error, {:over_limit, _, _} = reason} -> refused(topic, from, reason)
      {:error, {:over_limit, _, _, _} = reason} -> refused(topic, from, reason)
      result -> result
    end
  end

  defp refused(topic, from, reason) do
    unless Process.get({__MODULE__, :told}) do
      Process.put({__MODULE__, :told}, true)

      me =
        case Process.info(self(), :registered_name) do
          {:registered_name, name} when is_atom(name) -> inspect(name)
          _ -> inspect(self())
        end

      Logger.warning(
        "#{me}: an event on #{topic} from " <>
          "#{inspect(from)} is not decoded: #{Symbiont.MsgPack.format_error(reason)}; dropped " <>
          "(the next ones are dropped without a word)"
      )
    end

    {:error, reason}
  end

  @doc """
  `text` cut to at most `max` bytes, at a character boundary, ending with
  `" [truncated]"` when it was cut.

      iex> Symbiont.ControlPlane.text("héllo wörld", 100)
      "héllo wörld"
      iex> Symbiont.ControlPlane.text(String.duplicate("é", 20), 20)
      "éééé [truncated]"
  """
  @spec text(String.t(), pos_integer) :: String.t()
  def text(text, max) when is_binary(text) and byte_size(text) <= max, do: text

  def text(text, max) when is_binary(text) do
    suffix = " [truncated]"
    cut = max(max - byte_size(suffix), 0)
    <<head::binary-size(cut), _::binary>> = text
    valid_prefix(head) <> suffix
  end

  # The longest prefix of `bin` that is valid UTF-8 (a cut may split a character).
  defp valid_prefix(bin) do
    case :unicode.characters_to_binary(bin) do
      ^bin -> bin
      {:incomplete, ok, _rest} -> ok
      {:error, ok, _rest} -> ok
    end
  end

  @doc """
  `map` when it encodes in msgpack within `max` bytes; else its `keep` keys and
  `"inspect"`: the `inspect/2` text of the rest, cut to fit (a map msgpack cannot
  encode is treated the same way).

      iex> Symbiont.ControlPlane.bound(%{"a" => 1}, 100)
      %{"a" => 1}
      iex> %{"id" => "x", "inspect" => t} =
      ...>   Symbiont.ControlPlane.bound(%{"id" => "x", "big" => String.duplicate("z", 500)}, 200, ["id"])
      iex> byte_size(t) <= 200
      true
  """
  @spec bound(map, pos_integer, [term]) :: map
  def bound(map, max, keep \\ []) when is_map(map) and is_integer(max) and max > 0 do
    case Symbiont.MsgPack.encode(map) do
      {:ok, iodata} -> if IO.iodata_length(iodata) <= max, do: map, else: cut(map, max, keep)
      {:error, _} -> cut(map, max, keep)
    end
  end

  defp cut(map, max, keep) do
    {kept, rest} = Map.split(map, keep)
    room = max(div(max, 2), 64)
    Map.put(kept, "inspect", text(inspect(rest, limit: 50, printable_limit: room), room))
  end
end
