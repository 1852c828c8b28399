defmodule Symbiont.MsgPack.Raw do
  @moduledoc """
  A value that is already msgpack: the encoder splices its bytes in as they are.

  For payloads and states that travel through the BEAM without being decoded, so that
  they come out exactly as they went in (a decode and re-encode would, for one, turn
  bytes that happen to be valid UTF-8 into a string):

      iex> Symbiont.MsgPack.encode!(["state", %Symbiont.MsgPack.Raw{data: <<0xC4, 1, 3>>}], iodata: false)
      <<0x92, 0xA5, "state", 0xC4, 1, 3>>

  The bytes are not checked; they must be exactly one msgpack value. Decoding never
  produces this struct.
  """
  @enforce_keys [:data]
  defstruct [:data]

  @type t :: %__MODULE__{data: iodata}
end
