defmodule Symbiont.MsgPack.Timestamp do
  @moduledoc """
  A msgpack timestamp (ext -1) that `DateTime` cannot hold exactly: one with
  sub-microsecond nanoseconds, or outside the years `DateTime` supports.

  Timestamps that fit decode to `DateTime` (UTC); this struct keeps the rest lossless:

      iex> Symbiont.MsgPack.decode(<<0xD7, -1::signed-8, 1::30, 0::34>>)
      {:ok, %Symbiont.MsgPack.Timestamp{seconds: 0, nanoseconds: 1}}
  """
  @enforce_keys [:seconds, :nanoseconds]
  defstruct [:seconds, :nanoseconds]

  @type t :: %__MODULE__{seconds: integer, nanoseconds: 0..999_999_999}
end
