defmodule Symbiont.MsgPack.ExtTypes do
  @moduledoc false
  # The msgpack ext type numbers of the term mapping (PROTOCOL.md §2), one place for the
  # encoder and the decoder: `use Symbiont.MsgPack.ExtTypes` sets them as module
  # attributes (`@ext_atom`...), usable in binary patterns.

  defmacro __using__(_opts) do
    quote do
      @ext_atom 1
      @ext_tuple 2
      @ext_pid 3
      @ext_ref 4
      @ext_opaque 5
      @ext_timestamp -1
    end
  end
end
