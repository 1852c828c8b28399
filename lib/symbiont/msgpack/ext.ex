defmodule Symbiont.MsgPack.Ext do
  @moduledoc """
  A msgpack extension value whose type Symbiont does not map (`docs/PROTOCOL.md` §2).

  Types -1 (timestamp) and 1..5 (Erlang terms) are decoded to Elixir values; every other
  type, application-defined ones included, decodes to this struct and encodes back
  unchanged:

      iex> Symbiont.MsgPack.decode(<<0xD4, 42, 7>>)
      {:ok, %Symbiont.MsgPack.Ext{type: 42, data: <<7>>}}
  """
  @enforce_keys [:type, :data]
  defstruct [:type, :data]

  @type t :: %__MODULE__{type: -128..127, data: binary}
end
