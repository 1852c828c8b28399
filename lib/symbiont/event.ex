defmodule Symbiont.Event do
  @moduledoc """
  An event on the mesh: a topic and its payload, encoded once as msgpack by the publisher.

  Subscribers receive `%Symbiont.Event{}` messages. The payload stays an opaque binary
  while it is routed (it is never decoded and re-encoded per subscriber); `decode/1` gives
  the value.

      iex> event = Symbiont.Event.new!("orders.created", %{"id" => 1})
      iex> Symbiont.Event.decode(event)
      {:ok, %{"id" => 1}}
  """
  defstruct [:topic, :payload, :from, id: nil, seq: nil, reserved: false]

  @max_topic_bytes 1_024

  @doc """
  The longest topic an agent may publish on or subscribe to, in bytes (see "Topics" in
  `Symbiont.Agent`; Elixir code is not held to it).

      iex> Symbiont.Event.max_topic_bytes()
      1024
  """
  @spec max_topic_bytes() :: pos_integer
  def max_topic_bytes, do: @max_topic_bytes

  @typedoc """
  `from` names the publisher (an agent, or `nil`); `id` identifies the event for
  subscribers that drop duplicates (see `t:id/0`); `seq` is the number the agent that
  accepted it gave it (the seq of its delivery, PROTOCOL.md §8, and a durable agent's
  number for it in its journal, `Symbiont.Journal`), `nil` until an agent accepts it;
  `reserved` is true in the copy sent to an agent on the publisher's node that a checked
  publish admitted and reserved room in (`Symbiont.Mesh.publish/3`), false otherwise.
  """
  @type t :: %__MODULE__{
          topic: String.t(),
          payload: binary,
          from: String.t() | nil,
          id: id | nil,
          seq: pos_integer | nil,
          reserved: boolean
        }

  @typedoc """
  The deterministic id of an event an agent published: `{agent_id, incarnation, seq, n}`:
  the publishing agent's id (a replica's own), the incarnation of its server (an integer
  that changes when the server starts again with a fresh seq count), the seq of the
  delivery it was handling, and the index of the publish within that handling
  (PROTOCOL.md §8.1). The same event published again after a crash, a retry or a restart
  from the same checkpoint has the same id, so a `dedupe: true` agent drops the copy
  (`Symbiont.Agent`, "Duplicates"). Events published from Elixir have none (`nil`) unless
  given one (`Symbiont.publish/3`).
  """
  @type id :: {String.t(), integer, non_neg_integer, integer}

  @doc """
  Builds an event, encoding `value` as msgpack once; `{:error, {:unencodable, term}}` when
  it has no msgpack form.
  """
  @spec new(String.t(), term, String.t() | nil) :: {:ok, t} | {:error, term}
  def new(topic, value, from \\ nil) when is_binary(topic) do
    with {:ok, iodata} <- Symbiont.MsgPack.encode(value) do
      {:ok, %__MODULE__{topic: topic, payload: IO.iodata_to_binary(iodata), from: from}}
    end
  end

  @doc "Like `new/3`, but raises if `value` cannot be encoded."
  @spec new!(String.t(), term, String.t() | nil) :: t
  def new!(topic, value, from \\ nil) when is_binary(topic) do
    case new(topic, value, from) do
      {:ok, event} ->
        event

      {:error, reason} ->
        raise ArgumentError, "cannot encode as msgpack: " <> Symbiont.MsgPack.format_error(reason)
    end
  end

  @doc """
  Checks an event id given from Elixir (`t:id/0`); `nil` is no id. Else an `:invalid`
  `Symbiont.Error`.

      iex> Symbiont.Event.validate_id({"importer", 1, 42, 0})
      :ok
      iex> {:error, error} = Symbiont.Event.validate_id({"importer", 42, 0})
      iex> {error.reason, error.details}
      {:invalid, %{field: :id, value: {"importer", 42, 0}}}
      iex> error.message
      ~s|expected :id to be nil or {publisher (string), incarnation (integer), seq (integer >= 0), n (integer)}, got: {"importer", 42, 0}|
  """
  @spec validate_id(term) :: :ok | {:error, Symbiont.Error.t()}
  def validate_id(nil), do: :ok

  def validate_id({publisher, incarnation, seq, n})
      when is_binary(publisher) and is_integer(incarnation) and is_integer(seq) and seq >= 0 and
             is_integer(n),
      do: :ok

  def validate_id(other),
    do:
      {:error,
       Symbiont.Error.new(
         :invalid,
         "expected :id to be nil or {publisher (string), incarnation (integer), seq (integer >= 0), n (integer)}, got: #{inspect(other)}",
         field: :id,
         value: other
       )}

  @doc "Decodes the payload."
  @spec decode(t) :: {:ok, term} | {:error, term}
  def decode(%__MODULE__{payload: payload}), do: Symbiont.MsgPack.decode(payload)

  @doc "Decodes the payload; raises `ArgumentError` if it is not msgpack."
  @spec decode!(t) :: term
  def decode!(%__MODULE__{payload: payload}), do: Symbiont.MsgPack.decode!(payload)
end
