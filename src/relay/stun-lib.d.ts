/**
 * Types for the part of `@msimerson/stun` (a CommonJS package without declarations) that the
 * relay's STUN responder and its tests use.
 */
declare module '@msimerson/stun' {
  interface StunAddress {
    family: 'IPv4' | 'IPv6'
    address: string
    port: number
  }

  interface StunAttribute {
    type: number
    value: unknown
  }

  /** A decoded message. */
  interface StunResponse {
    readonly type: number
    readonly transactionId: Buffer
    isLegacy(): boolean
    getAttribute(type: number): StunAttribute | undefined
    hasAttribute(type: number): boolean
    getXorAddress(): StunAddress | undefined
    getAddress(): StunAddress | undefined
    getSoftware(): string | undefined
    getFingerprint(): number | undefined
  }

  /** A message being built. */
  interface StunRequest extends StunResponse {
    addXorAddress(address: string, port: number): boolean
    addAddress(address: string, port: number): boolean
    addSoftware(software: string): boolean
    addFingerprint(): boolean
    addError(code: number, reason?: string): boolean
    addUnknownAttributes(types: number[]): boolean
    toBuffer(): Buffer
  }

  interface StunLib {
    createMessage(type: number, transactionId?: Buffer): StunRequest
    decode(message: Buffer): StunResponse
    encode(message: StunRequest): Buffer
    validateFingerprint(message: StunResponse): boolean
    constants: Record<string, number>
  }

  const stun: StunLib
  export default stun
}
