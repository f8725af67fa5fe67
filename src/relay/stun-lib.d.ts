/**
 * Types for the part of `@msimerson/stun` (a CommonJS package without declarations) that the
 * relay's STUN responder uses.
 */
declare module '@msimerson/stun' {
  /** A decoded message. */
  interface StunResponse {
    readonly transactionId: Buffer
    hasAttribute(type: number): boolean
  }

  /** A message being built. */
  interface StunRequest extends StunResponse {
    addXorAddress(address: string, port: number): boolean
    addAttribute(type: number, ...values: unknown[]): unknown
    addSoftware(software: string): boolean
    addFingerprint(): boolean
    toBuffer(): Buffer
  }

  const stun: {
    createMessage(type: number, transactionId?: Buffer): StunRequest
    decode(message: Buffer): StunResponse
    validateFingerprint(message: StunResponse): boolean
    constants: Record<'STUN_BINDING_REQUEST' | 'STUN_BINDING_RESPONSE' | 'STUN_ATTR_FINGERPRINT', number>
  }
  export default stun
}
