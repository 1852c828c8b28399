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
  defstruct [:topic, :payload, :from, reserved: [], journal_id: nil]

  @typedoc """
  `from` names the publisher (an agent, or `nil`); `reserved` lists the subscribers on the
  publisher's node that a checked publish reserved room for (`Symbiont.Mesh.publish/3`);
  `journal_id` is the event's number in a durable agent's journal, set by that agent as
  it accepts the event (`Symbiont.Journal`), `nil` elsewhere.
  """
  @type t :: %__MODULE__{
          topic: String.t(),
          payload: binary,
          from: String.t() | nil,
          reserved: [pid],
          journal_id: pos_integer | nil
        }

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

  @doc "Decodes the payload."
  @spec decode(t) :: {:ok, term} | {:error, term}
  def decode(%__MODULE__{payload: payload}), do: Symbiont.MsgPack.decode(payload)

  @doc "Decodes the payload; raises `ArgumentError` if it is not msgpack."
  @spec decode!(t) :: term
  def decode!(%__MODULE__{payload: payload}), do: Symbiont.MsgPack.decode!(payload)
end
