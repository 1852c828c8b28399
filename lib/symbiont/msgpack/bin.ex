defmodule Symbiont.MsgPack.Bin do
  @moduledoc """
  Forces a binary to be encoded as msgpack bin rather than str.

  A binary that is valid UTF-8 is encoded as str (a Python `str`); wrap it to send `bytes`:

      iex> Symbiont.MsgPack.encode!(%Symbiont.MsgPack.Bin{data: "abc"}, iodata: false)
      <<0xC4, 3, "abc">>

  Decoding never produces this struct: a bin decodes to a plain binary.
  """
  @enforce_keys [:data]
  defstruct [:data]

  @type t :: %__MODULE__{data: binary}
end
